package ssh

import (
	"context"
	"fmt"
	"os"
	"path"
	"strings"
)

// Copy is a file the host copies from another of its files: From's bytes at To,
// with mode Mode, owned by root. SHA256 is From's verified digest.
type Copy struct {
	From, To string
	Mode     os.FileMode
	SHA256   string
}

// CopyFiles copies, in ONE command, each From to its To where their bytes
// differ (cmp): to a temp name beside To, renamed into place, and records the
// digest of what it wrote in the sums cache, so the next check of To needs no
// hashing (a 200 MB multi-call binary copied twice is 1.3 s of sha256sum
// otherwise). With ifExists, a missing From is skipped; else it is an error.
// It returns the paths it wrote.
func (c *Client) CopyFiles(ctx context.Context, copies []Copy, ifExists bool) ([]string, error) {
	if len(copies) == 0 {
		return nil, nil
	}
	var script strings.Builder
	script.WriteString(c.checkScript())
	for _, cp := range copies {
		if !path.IsAbs(cp.From) || !path.IsAbs(cp.To) || path.Clean(cp.To) != cp.To || len(cp.SHA256) != 64 {
			return nil, fmt.Errorf("copy %s to %s on %s: needs clean absolute paths and a sha256 digest", cp.From, cp.To, c.cfg.Host)
		}
		guard := ""
		if ifExists {
			guard = fmt.Sprintf("[ -f %s ] && ", Quote(cp.From))
		}
		fmt.Fprintf(&script, "if %[5]s! cmp -s %[1]s %[2]s; then { install -m %[3]o %[1]s %[2]s.kubeforge-tmp && mv -f %[2]s.kubeforge-tmp %[2]s && record %[2]s %[4]s ours && echo %[2]s; } || { rm -f %[2]s.kubeforge-tmp; exit 1; }; fi\n",
			Quote(cp.From), Quote(cp.To), cp.Mode.Perm(), strings.ToLower(cp.SHA256), guard)
	}
	out, err := c.run(ctx, script.String(), nil, true)
	if err != nil {
		return nil, fmt.Errorf("copy files on %s: %w", c.cfg.Host, err)
	}
	return strings.Fields(out), nil
}
