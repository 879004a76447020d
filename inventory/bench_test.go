package inventory

import (
	"errors"
	"syscall"
	"testing"
	"time"
)

// benchHosts workers make bigInventory about 5 MB.
const benchHosts = 82000

// BenchmarkLoad5MB parses, defaults and validates a 5 MB inventory (82,000
// workers): a valid one, and one with a syntax error near its end, which must
// be reported at its own line. Run: go test -run '^$' -bench Load5MB ./inventory/
func BenchmarkLoad5MB(b *testing.B) {
	valid := bigInventory(benchHosts, 0)
	lines := 3 + 4*benchHosts
	for _, bc := range []struct {
		name string
		bad  int // the line indented wrongly; 0 for none
	}{{"valid", 0}, {"syntax-error-near-end", lines - 6}} {
		data := valid
		if bc.bad > 0 {
			data = bigInventory(benchHosts, bc.bad)
		}
		b.Run(bc.name, func(b *testing.B) {
			b.SetBytes(int64(len(data)))
			b.ReportAllocs()
			start := cpuTime(b)
			for b.Loop() {
				_, err := Parse(data, "big.yaml")
				var ve *ValidationError
				switch {
				case bc.bad == 0 && err != nil:
					b.Fatalf("Parse(valid) = %v", err)
				case bc.bad > 0 && (!errors.As(err, &ve) || len(ve.Problems) != 1 || ve.Problems[0].Line != bc.bad):
					b.Fatalf("Parse = %v; want one problem at line %d", err, bc.bad)
				}
			}
			// CPU seconds as well as wall time: on a shared machine the wall
			// time says more about the neighbours than about Parse.
			b.ReportMetric((cpuTime(b)-start).Seconds()/float64(b.N), "cpu-s/op")
		})
	}
}

// cpuTime is the CPU time (user and system) the process has used so far.
func cpuTime(b *testing.B) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatalf("getrusage: %v", err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
