package ssh

import "context"

// Reason says why a remote file differs from the one kubeforge would write.
type Reason string

// The reasons Check reports.
const (
	ReasonMissing Reason = "missing"
	ReasonContent Reason = "content differs"
	ReasonMode    Reason = "mode differs"
	ReasonOwner   Reason = "owner differs"
)

// Diff is one file that Upload would write, and why.
type Diff struct {
	Path   string
	Reason Reason
}

// Check reports, without changing anything, which of files Upload would
// write and why, in the order given. It runs ONE remote command (the same
// check Upload makes), so a plan and the upload that follows agree.
func (c *Client) Check(ctx context.Context, files []File) ([]Diff, error) {
	ups, err := c.prepare(files)
	if err != nil {
		return nil, err
	}
	reasons, err := c.diff(ctx, ups)
	if err != nil {
		return nil, err
	}
	var out []Diff
	for i, u := range ups {
		if reasons[i] != "" {
			out = append(out, Diff{Path: u.Path, Reason: reasons[i]})
		}
	}
	return out, nil
}
