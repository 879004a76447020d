package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestReportTablesPlotsAndJudgesTheGoals(t *testing.T) {
	line := func(n int, wall, rss float64, handshakes int) string {
		return fmt.Sprintf(`{"n":%d,"rep":1,"measure":{"exit":0,"wall_s":%g,"user_s":1,"sys_s":1,"max_rss_mb":%g},`+
			`"steps":{"connect":1},"sim":{"cpuS":2,"total":{"conns":%d,"handshakes":%d,"maxCmdBytes":2048}}}`, n, wall, rss, handshakes, handshakes)
	}
	results := filepath.Join(t.TempDir(), "results.jsonl")
	data := strings.Join([]string{line(100, 1, 60, 100), line(300, 3, 120, 300), line(1000, 40, 400, 999)}, "\n")
	if err := os.WriteFile(results, []byte(data), 0o644); err != nil {
		t.Fatal(err)
	}
	var out strings.Builder
	if err := reportMain([]string{results}, &out); err != nil {
		t.Fatal(err)
	}
	got := out.String()
	for _, want := range []string{
		"SIMULATED",
		"| 100 | 1 | 1.00 | 60 | 1.00 |",
		"| 1000 | 1 | 40.00 | 400 | 4.00 |",
		"999 handshakes", // N = 1000 lost one: the table says so
		"wall ≤ 30 s: 40.00 s → **missed**; peak RSS ≤ 500 MB: 400 MB → **met**",
		"wall s against N",
		"N = 1000: 2.0 KiB",
	} {
		if !strings.Contains(got, want) {
			t.Errorf("the report lacks %q:\n%s", want, got)
		}
	}
}
