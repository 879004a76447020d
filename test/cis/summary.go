package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
)

// kube-bench's JSON (check.OverallControls in its source), the fields the summary reads.
type (
	benchReport struct {
		Controls []benchControls `json:"Controls"`
	}
	benchControls struct {
		ID       string       `json:"id"`
		Version  string       `json:"version"`
		Text     string       `json:"text"`
		NodeType string       `json:"node_type"`
		Groups   []benchGroup `json:"tests"`
	}
	benchGroup struct {
		ID     string       `json:"section"`
		Text   string       `json:"desc"`
		Checks []benchCheck `json:"results"`
	}
	benchCheck struct {
		ID          string `json:"test_number"`
		Text        string `json:"test_desc"`
		Audit       string `json:"audit"`
		AuditConfig string `json:"AuditConfig"` // no json tag in kube-bench: the Go field name
		Type        string `json:"type"`        // "manual", "skip" or empty
		Status      string `json:"status"`      // PASS, FAIL, WARN, INFO
		Scored      bool   `json:"scored"`
		Expected    string `json:"expected_result"`
		Remediation string `json:"remediation"`
	}
)

// hostResult is one host's kube-bench report.
type hostResult struct {
	Host   string
	Report benchReport
}

// parseResult decodes kube-bench's `run --json` output from host.
func parseResult(host string, data []byte) (hostResult, error) {
	var r benchReport
	if err := json.Unmarshal(data, &r); err != nil {
		return hostResult{}, fmt.Errorf("decode kube-bench json: %w", err)
	}
	if len(r.Controls) == 0 {
		return hostResult{}, errors.New("decode kube-bench json: no controls (not `kube-bench run --json` output?)")
	}
	return hostResult{Host: host, Report: r}, nil
}

// manual reports whether c is one of the benchmark's manual checks: the CIS title ends in "(Manual)", or
// kube-bench marks it manual. kube-bench reports most of them as WARN (some as PASS) whatever the cluster does,
// so the summary counts them apart. Titles without the marker fall back to kube-bench's "scored".
func (c benchCheck) manual() bool {
	t := strings.TrimSpace(c.Text)
	switch {
	case c.Type == "manual" || strings.HasSuffix(t, "(Manual)"):
		return true
	case strings.HasSuffix(t, "(Automated)"):
		return false
	}
	return !c.Scored
}

// sectionNames names kube-bench's targets (a controls file's node_type) as the summary prints them.
var sectionNames = map[string]string{
	"master":       "control plane",
	"etcd":         "etcd",
	"controlplane": "control plane config",
	"node":         "node",
	"policies":     "policies",
}

// counts are one section's checks by result: automated ones by state, manual ones in Manual whatever their
// state, skipped ones (INFO) in Info.
type counts struct{ Pass, Fail, Warn, Manual, Info int }

func (c *counts) add(ch benchCheck) {
	switch {
	case ch.Status == "INFO" || ch.Type == "skip":
		c.Info++
	case ch.manual():
		c.Manual++
	case ch.Status == "PASS":
		c.Pass++
	case ch.Status == "FAIL":
		c.Fail++
	default:
		c.Warn++
	}
}

func (c *counts) plus(o counts) {
	c.Pass += o.Pass
	c.Fail += o.Fail
	c.Warn += o.Warn
	c.Manual += o.Manual
	c.Info += o.Info
}

// section is one controls file as run on one host.
type section struct {
	Host     string
	Controls benchControls
	Counts   counts
}

// finding is an automated check that failed or warned.
type finding struct {
	Host  string
	Check benchCheck
}

// writeSummary prints the per-section table and then every automated check that failed or warned, in the
// benchmark's order (section id, then the check's position in its file).
func writeSummary(w io.Writer, results []hostResult) error {
	var sections []section
	versions := map[string]bool{}
	for _, r := range results {
		for _, c := range r.Report.Controls {
			s := section{Host: r.Host, Controls: c}
			for _, g := range c.Groups {
				for _, ch := range g.Checks {
					s.Counts.add(ch)
				}
			}
			sections = append(sections, s)
			versions[c.Version] = true
		}
	}
	slices.SortStableFunc(sections, func(a, b section) int { return numericID(a.Controls.ID) - numericID(b.Controls.ID) })

	var findings []finding
	var total counts
	bw := &errWriter{w: w}
	fmt.Fprintf(bw, "CIS Kubernetes Benchmark %s (kube-bench): automated checks by result; manual checks counted apart\n\n",
		strings.Join(slices.Sorted(maps.Keys(versions)), ", "))
	tw := tabwriter.NewWriter(bw, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "section\t\thost\tpass\tfail\twarn\tmanual\tinfo")
	for _, s := range sections {
		name := sectionNames[s.Controls.NodeType]
		if name == "" {
			name = s.Controls.Text
		}
		c := s.Counts
		fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%d\t%d\t%d\t%d\n", s.Controls.ID, name, s.Host, c.Pass, c.Fail, c.Warn, c.Manual, c.Info)
		total.plus(c)
		for _, g := range s.Controls.Groups {
			for _, ch := range g.Checks {
				if !ch.manual() && ch.Type != "skip" && (ch.Status == "FAIL" || ch.Status == "WARN") {
					findings = append(findings, finding{Host: s.Host, Check: ch})
				}
			}
		}
	}
	fmt.Fprintf(tw, "total\t\t\t%d\t%d\t%d\t%d\t%d\n", total.Pass, total.Fail, total.Warn, total.Manual, total.Info)
	if err := tw.Flush(); err != nil {
		return fmt.Errorf("write summary: %w", err)
	}

	fmt.Fprintf(bw, "\nAutomated checks that FAIL or WARN: %d\n", len(findings))
	for _, f := range findings {
		c := f.Check
		fmt.Fprintf(bw, "\n%s %s [%s] %s\n", c.Status, c.ID, f.Host, strings.TrimSpace(c.Text))
		fmt.Fprintf(bw, "  audit:       %s\n", firstLine(c.Audit))
		if c.AuditConfig != "" {
			fmt.Fprintf(bw, "  config:      %s\n", firstLine(c.AuditConfig))
		}
		if c.Expected != "" {
			fmt.Fprintf(bw, "  expected:    %s\n", firstLine(c.Expected))
		}
		fmt.Fprintf(bw, "  remediation: %s\n", indent(strings.TrimSpace(c.Remediation), "               "))
	}
	if bw.err != nil {
		return fmt.Errorf("write summary: %w", bw.err)
	}
	return nil
}

// numericID orders kube-bench's section ids ("1" .. "5"); ids that are not numbers sort last.
func numericID(id string) int {
	n, err := strconv.Atoi(id)
	if err != nil {
		return 1 << 30
	}
	return n
}

// firstLine is s's first non-empty line, marked with " ..." when more follows.
func firstLine(s string) string {
	s = strings.TrimSpace(s)
	line, rest, _ := strings.Cut(s, "\n")
	if strings.TrimSpace(rest) != "" {
		return strings.TrimSpace(line) + " ..."
	}
	return strings.TrimSpace(line)
}

// indent prefixes every line of s after the first with pad.
func indent(s, pad string) string {
	return strings.ReplaceAll(s, "\n", "\n"+pad)
}

// errWriter keeps the first write error so that the summary checks once, at the end.
type errWriter struct {
	w   io.Writer
	err error
}

func (e *errWriter) Write(p []byte) (int, error) {
	if e.err != nil {
		return 0, e.err
	}
	n, err := e.w.Write(p)
	e.err = err
	return n, err
}
