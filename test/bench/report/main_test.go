package main

import (
	"fmt"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestSummarizeGivesMedianMinMax(t *testing.T) {
	for _, tc := range []struct {
		name string
		in   []float64
		want stat
	}{
		{"odd count", []float64{3, 1, 2}, stat{2, 1, 3}},
		{"even count averages the middle two", []float64{4, 1, 2, 3}, stat{2.5, 1, 4}},
		{"one value", []float64{7}, stat{7, 7, 7}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := summarize(tc.in); got != tc.want {
				t.Errorf("summarize(%v) = %+v, want %+v", tc.in, got, tc.want)
			}
		})
	}
	if got := summarize(nil); !math.IsNaN(got.med) || got.String() != "–" {
		t.Errorf("summarize(nil) = %+v (%q), want NaN shown as –", got, got.String())
	}
}

func TestRatioPairsRunsOfTheSameRepetition(t *testing.T) {
	dir := t.TempDir()
	results := filepath.Join(dir, "results.jsonl")
	lines := []string{
		`{"kind":"run","tool":"kubeforge","mode":"cold","n":10,"rep":1,"measure":{"wall_s":1}}`,
		`{"kind":"run","tool":"ansible","mode":"cold","n":10,"rep":1,"measure":{"wall_s":20}}`,
		`{"kind":"run","tool":"kubeforge","mode":"cold","n":10,"rep":2,"measure":{"wall_s":2}}`,
		`{"kind":"run","tool":"ansible","mode":"cold","n":10,"rep":2,"measure":{"wall_s":10}}`,
		`{"kind":"meta","size_mb":100,"reps":2,"ns":"10"}`,
	}
	if err := os.WriteFile(results, []byte(strings.Join(lines, "\n")+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	d, err := load(results)
	if err != nil {
		t.Fatal(err)
	}
	// Per repetition: 20/1 = 20 and 10/2 = 5, so the median is 12.5; the ratio of medians would be 15/1.5 = 10.
	if got := d.ratio("cold", 10, wall); got != (stat{12.5, 5, 20}) {
		t.Errorf("ratio = %+v, want {12.5 5 20}", got)
	}
	var b strings.Builder
	d.targets(func(f string, a ...any) { b.WriteString(fmt.Sprintf(f, a...)) }, 0)
	if !strings.Contains(b.String(), "cold): Ansible ÷ kubeforge = 12.5× (5.0×–20.0×) → **met**") {
		t.Errorf("targets do not report the N=10 ratio as met:\n%s", b.String())
	}
}

func TestLoadRejectsBadInput(t *testing.T) {
	dir := t.TempDir()
	for name, content := range map[string]string{
		"not json":  "{nope\n",
		"no runs":   `{"kind":"meta"}` + "\n",
		"no figure": `{"kind":"run","tool":"ansible","mode":"cold","n":1,"rep":1}` + "\n",
	} {
		p := filepath.Join(dir, strings.ReplaceAll(name, " ", "_"))
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
		if _, err := load(p); err == nil {
			t.Errorf("%s: load succeeded, want an error", name)
		}
	}
}

func TestTicksAreOneTwoFiveAndInRange(t *testing.T) {
	var got []string
	for _, tk := range (ticks125{}).Ticks(0.3, 60) {
		got = append(got, tk.Label)
	}
	if want := "0.5 1 2 5 10 20 50"; strings.Join(got, " ") != want {
		t.Errorf("ticks = %v, want %s", got, want)
	}
}
