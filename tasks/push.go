package tasks

import (
	"context"
	"fmt"
	"github.com/kubeforge/kubeforge/internal/atomicfile"
	"os"
	"path/filepath"
	"sort"

	"github.com/kubeforge/kubeforge/pki"
	"github.com/kubeforge/kubeforge/ssh"
)

// push uploads rendered files to h (atomic, skipped when the checksum
// matches) and records what changed. It returns the changed paths.
func push(ctx context.Context, h *Host, files []pki.File) ([]string, error) {
	if len(files) == 0 {
		return nil, nil
	}
	sf := make([]ssh.File, len(files))
	for i, f := range files {
		sf[i] = ssh.File{Path: f.Path, Mode: f.Mode, Data: f.Data}
	}
	changed, err := h.Client.Upload(ctx, sf)
	if err != nil {
		return nil, fmt.Errorf("push files: %w", err)
	}
	for _, p := range changed {
		h.Changed(Change{Kind: ChangeFile, What: p})
	}
	return changed, nil
}

// writeLocalTree writes files under root (the state dir's nodes/<host>),
// atomically, keeping modes, and removes nothing else.
func writeLocalTree(root string, files []pki.File) error {
	sort.Slice(files, func(i, j int) bool { return files[i].Path < files[j].Path })
	for _, f := range files {
		dst := filepath.Join(root, filepath.FromSlash(f.Path))
		if old, err := os.ReadFile(dst); err == nil && string(old) == string(f.Data) {
			continue
		}
		if err := os.MkdirAll(filepath.Dir(dst), 0o700); err != nil {
			return fmt.Errorf("create %s: %w", filepath.Dir(dst), err)
		}
		if err := atomicfile.Write(dst, f.Data, f.Mode); err != nil {
			return err
		}
	}
	return nil
}
