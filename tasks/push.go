package tasks

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"github.com/kubeforge/kubeforge/internal/atomicfile"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/kubeforge/kubeforge/internal/nodefile"
	"github.com/kubeforge/kubeforge/ssh"
)

// push uploads rendered files to h (atomic, skipped when the checksum
// matches) and records what changed. It returns the changed paths. Files the
// plan of this run found as wanted on the host (same content, mode and owner)
// are not checked again.
func push(ctx context.Context, h *Host, files []nodefile.File) ([]string, error) {
	sf := make([]ssh.File, 0, len(files))
	for _, f := range files {
		sf = append(sf, ssh.File{Path: f.Path, Mode: f.Mode, Data: f.Data})
	}
	sf = h.unverified(sf)
	if len(sf) == 0 {
		return nil, nil
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
func writeLocalTree(root string, files []nodefile.File) error {
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

// fileDigest is the sha256 (hex) of f's content, with its mode.
func fileDigest(f ssh.File) string {
	if f.SHA256 != "" {
		return fmt.Sprintf("%s %o", strings.ToLower(f.SHA256), f.Mode.Perm())
	}
	sum := sha256.Sum256(f.Data)
	return fmt.Sprintf("%s %o", hex.EncodeToString(sum[:]), f.Mode.Perm())
}

// verify records that the plan found these files on h as wanted.
func (h *Host) verify(files []ssh.File) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.verified == nil {
		h.verified = map[string]string{}
	}
	for _, f := range files {
		h.verified[f.Path] = fileDigest(f)
	}
}

// unverified returns the files the plan did not find on h as wanted.
func (h *Host) unverified(files []ssh.File) []ssh.File {
	h.mu.Lock()
	defer h.mu.Unlock()
	out := files[:0:0]
	for _, f := range files {
		// A streamed file counts only with its digest given (it is not read here).
		if d, ok := h.verified[f.Path]; ok && (f.Source == "" || f.SHA256 != "") && d == fileDigest(f) {
			continue
		}
		out = append(out, f)
	}
	return out
}
