package main

import (
	"testing"
	"time"
)

// A daemon the command leaves behind (as ssh ControlPersist masters are) is adopted, stopped and counted.
func TestRunCountsTheCPUOfProcessesLeftBehind(t *testing.T) {
	script := `( i=0; while [ $i -lt 300000 ]; do i=$((i+1)); done; sleep 30 ) & sleep 1; exit 3`
	start := time.Now()
	res, err := run([]string{"sh", "-c", script}, 20*time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	if res.Exit != 3 {
		t.Errorf("exit = %d, want the command's 3", res.Exit)
	}
	if res.WallS < 0.9 || res.WallS > 5 {
		t.Errorf("wall = %.2fs, want about 1s (until the command exits, not its daemon)", res.WallS)
	}
	if time.Since(start) > 10*time.Second {
		t.Errorf("measure waited %s: the left-behind process was not stopped", time.Since(start))
	}
	if res.UserS+res.SysS < 0.1 {
		t.Errorf("cpu = %.2fs, want the background loop's CPU counted", res.UserS+res.SysS)
	}
	if res.Procs < 2 || res.MaxRSSMB <= 0 || res.TreeRSSMB <= 0 {
		t.Errorf("procs=%d maxrss=%.1f tree=%.1f, want the daemon reaped and memory sampled", res.Procs, res.MaxRSSMB, res.TreeRSSMB)
	}
}
