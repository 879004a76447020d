package tasks

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"sort"
	"text/tabwriter"
	"time"

	"github.com/kubeforge/kubeforge/pki"
)

// ReadNodeCerts reads, on the host, every certificate kubeforge put there and
// records its expiry for `kubeforge certs check-expiration --hosts`.
func ReadNodeCerts(ctx context.Context, env *Env, h *Host) error {
	now := time.Now()
	for _, nc := range pki.NodeCertificates(env.Inv, env.Seed(), h.Host) {
		data, err := h.Client.ReadFile(ctx, nc.Path)
		if errors.Is(err, os.ErrNotExist) {
			continue
		}
		if err != nil {
			return fmt.Errorf("read %s: %w", nc.Path, err)
		}
		ci, err := pki.Expiration(nc.Name, data, now)
		if err != nil {
			return err
		}
		ci.Host, ci.File = h.Name, nc.Path
		env.mu.Lock()
		env.certInfos = append(env.certInfos, ci)
		env.mu.Unlock()
	}
	return nil
}

// NodeCertInfos returns what ReadNodeCerts found, by host and name.
func (e *Env) NodeCertInfos() []pki.CertInfo {
	e.mu.Lock()
	defer e.mu.Unlock()
	out := append([]pki.CertInfo(nil), e.certInfos...)
	sort.SliceStable(out, func(i, j int) bool {
		if out[i].Host != out[j].Host {
			return out[i].Host < out[j].Host
		}
		return out[i].Name < out[j].Name
	})
	return out
}

// WriteCertTable prints the check-expiration table.
func WriteCertTable(w io.Writer, infos []pki.CertInfo) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "HOST\tCERTIFICATE\tSUBJECT\tEXPIRES\tRESIDUAL TIME\tCA\tFILE")
	for _, c := range infos {
		host := c.Host
		if host == "" {
			host = "(cluster)"
		}
		ca := c.CAName
		if c.IsCA {
			ca = "-"
			if c.External {
				ca = "- (external)"
			}
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", host, c.Name, c.Subject, c.NotAfter.UTC().Format("Jan 02, 2006 15:04 MST"),
			residual(c.Residual), ca, c.File)
	}
	tw.Flush()
}

func residual(d time.Duration) string {
	if d <= 0 {
		return "EXPIRED"
	}
	days := int(d.Hours() / 24)
	if days >= 365 {
		return fmt.Sprintf("%dy", days/365)
	}
	if days >= 1 {
		return fmt.Sprintf("%dd", days)
	}
	return d.Round(time.Minute).String()
}
