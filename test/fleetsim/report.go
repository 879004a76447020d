package main

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"slices"
	"sort"
	"strings"
)

// benchRun is one line of bench-fleet.sh's results: one `kubeforge preflight` against the fleet.
type benchRun struct {
	N       int `json:"n"`
	Rep     int `json:"rep"`
	Measure struct {
		Exit     int     `json:"exit"`
		WallS    float64 `json:"wall_s"`
		UserS    float64 `json:"user_s"`
		SysS     float64 `json:"sys_s"`
		MaxRSSMB float64 `json:"max_rss_mb"`
	} `json:"measure"`
	Steps map[string]float64 `json:"steps"` // step wall seconds, from kubeforge's --output json
	Sim   struct {
		CPUS  float64       `json:"cpuS"`
		Total EndpointStats `json:"total"`
	} `json:"sim"`
}

// Goals of issue 15 for N = 1000.
const (
	goalWallS = 30
	goalRSSMB = 500
)

// reportMain is `fleetsim report RESULTS.jsonl`: the markdown fragment of the fleet benchmark.
func reportMain(args []string, w io.Writer) error {
	if len(args) != 1 {
		return errors.New("usage: fleetsim report RESULTS.jsonl")
	}
	f, err := os.Open(args[0])
	if err != nil {
		return err
	}
	defer f.Close()
	byN := map[int][]benchRun{}
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 1<<24)
	for sc.Scan() {
		if strings.TrimSpace(sc.Text()) == "" {
			continue
		}
		var r benchRun
		if err := json.Unmarshal(sc.Bytes(), &r); err != nil {
			return fmt.Errorf("parse %s: %w", args[0], err)
		}
		byN[r.N] = append(byN[r.N], r)
	}
	if err := sc.Err(); err != nil {
		return err
	}
	if len(byN) == 0 {
		return fmt.Errorf("%s holds no run", args[0])
	}
	writeReport(w, byN)
	return nil
}

type row struct {
	n                      int
	wall, rss, cpu, simCPU float64
	maxCmd, overArgMax     int64
	steps                  map[string]float64
	runs                   int
	problems               []string
}

func writeReport(w io.Writer, byN map[int][]benchRun) {
	var ns []int
	for n := range byN {
		ns = append(ns, n)
	}
	sort.Ints(ns)
	var rows []row
	stepNames := []string{"connect", "facts", "preflight/host", "preflight/cluster"}
	for _, n := range ns {
		runs := byN[n]
		r := row{n: n, runs: len(runs), steps: map[string]float64{}}
		r.wall = median(runs, func(b benchRun) float64 { return b.Measure.WallS })
		r.rss = median(runs, func(b benchRun) float64 { return b.Measure.MaxRSSMB })
		r.cpu = median(runs, func(b benchRun) float64 { return b.Measure.UserS + b.Measure.SysS })
		r.simCPU = median(runs, func(b benchRun) float64 { return b.Sim.CPUS })
		for _, s := range stepNames {
			r.steps[s] = median(runs, func(b benchRun) float64 { return b.Steps[s] })
		}
		for _, b := range runs {
			t := b.Sim.Total
			r.maxCmd, r.overArgMax = max(r.maxCmd, t.MaxCmdBytes), max(r.overArgMax, t.OverArgMax)
			if b.Measure.Exit != 0 {
				r.problems = append(r.problems, fmt.Sprintf("rep %d: kubeforge exited %d", b.Rep, b.Measure.Exit))
			}
			if t.Handshakes != int64(n) || t.Conns != int64(n) || t.Refused+t.Failed+t.AuthRejected > 0 || t.Unrecorded > 0 {
				r.problems = append(r.problems, fmt.Sprintf("rep %d: %d connections, %d handshakes, %d refused, %d failed, %d auth rejected, %d unrecorded commands",
					b.Rep, t.Conns, t.Handshakes, t.Refused, t.Failed, t.AuthRejected, t.Unrecorded))
			}
		}
		rows = append(rows, r)
	}

	fmt.Fprintf(w, "%s\n\n", simulationNote)
	fmt.Fprintln(w, "| N | runs | wall s | peak RSS MB | s per 100 hosts | kubeforge CPU s | simulator CPU s | connect | facts | preflight/host | preflight/cluster | handshakes refused or lost |")
	fmt.Fprintln(w, "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|")
	for _, r := range rows {
		lost := "none"
		if len(r.problems) > 0 {
			lost = "**" + strings.Join(r.problems, "; ") + "**"
		}
		fmt.Fprintf(w, "| %d | %d | %.2f | %.0f | %.2f | %.2f | %.2f | %.2f | %.2f | %.2f | %.2f | %s |\n", r.n, r.runs, r.wall, r.rss,
			r.wall/float64(r.n)*100, r.cpu, r.simCPU, r.steps["connect"], r.steps["facts"], r.steps["preflight/host"], r.steps["preflight/cluster"], lost)
	}
	fmt.Fprintln(w)
	xs := make([]float64, len(rows))
	walls, rsss := make([]float64, len(rows)), make([]float64, len(rows))
	for i, r := range rows {
		xs[i], walls[i], rsss[i] = float64(r.n), r.wall, r.rss
	}
	fmt.Fprintln(w, "```text")
	fmt.Fprint(w, asciiPlot("wall s against N", xs, walls))
	fmt.Fprintln(w)
	fmt.Fprint(w, asciiPlot("peak RSS MB against N", xs, rsss))
	fmt.Fprintln(w, "```")
	fmt.Fprintln(w)
	a, b, r2 := fit(xs, walls)
	fmt.Fprintf(w, "- Linear fit of wall time: %.2f s + %.2f s per 100 hosts (R² %.3f).", a, b*100, r2)
	if len(rows) > 1 {
		lo, hi := rows[0], rows[len(rows)-1]
		fmt.Fprintf(w, " T(%d)/T(%d) = %.2f for %.1f× the hosts.", hi.n, lo.n, hi.wall/lo.wall, float64(hi.n)/float64(lo.n))
	}
	fmt.Fprintln(w)
	if len(rows) > 1 {
		lo, hi := rows[0], rows[len(rows)-1]
		fmt.Fprintf(w, "- kubeforge's CPU time (less disturbed by other load than wall time): T(%d)/T(%d) = %.2f for %.1f× the hosts.\n",
			hi.n, lo.n, hi.cpu/lo.cpu, float64(hi.n)/float64(lo.n))
	}
	ra, rb, _ := fit(xs, rsss)
	fmt.Fprintf(w, "- Memory: %.0f MB + %.1f MB per 100 hosts (linear fit).\n", ra, rb*100)
	var longest []string
	for _, r := range rows {
		l := fmt.Sprintf("N = %d: %.1f KiB", r.n, float64(r.maxCmd)/1024)
		if r.overArgMax > 0 {
			l += " (**too long**)"
		}
		longest = append(longest, l)
	}
	fmt.Fprintf(w, "- The longest command kubeforge sent (a real sshd runs it as one argument, at most 128 KiB): %s.\n", strings.Join(longest, "; "))
	if i := slices.IndexFunc(rows, func(r row) bool { return r.n == 1000 }); i >= 0 {
		r := rows[i]
		fmt.Fprintf(w, "- Goals at N = 1000: wall ≤ %d s: %.2f s → %s; peak RSS ≤ %d MB: %.0f MB → %s.\n",
			goalWallS, r.wall, metOrMissed(r.wall <= goalWallS), goalRSSMB, r.rss, metOrMissed(r.rss <= goalRSSMB))
	}
}

func metOrMissed(ok bool) string {
	if ok {
		return "**met**"
	}
	return "**missed**"
}

func median(runs []benchRun, get func(benchRun) float64) float64 {
	v := make([]float64, len(runs))
	for i, r := range runs {
		v[i] = get(r)
	}
	sort.Float64s(v)
	if len(v)%2 == 1 {
		return v[len(v)/2]
	}
	return (v[len(v)/2-1] + v[len(v)/2]) / 2
}

// fit is the least-squares line y = a + b x and its R².
func fit(xs, ys []float64) (a, b, r2 float64) {
	n := float64(len(xs))
	if n < 2 {
		if n == 1 && xs[0] != 0 {
			return 0, ys[0] / xs[0], 1
		}
		return 0, 0, 0
	}
	var sx, sy, sxx, sxy, syy float64
	for i := range xs {
		sx, sy = sx+xs[i], sy+ys[i]
		sxx, sxy, syy = sxx+xs[i]*xs[i], sxy+xs[i]*ys[i], syy+ys[i]*ys[i]
	}
	d := n*sxx - sx*sx
	if d == 0 {
		return 0, 0, 0
	}
	b = (n*sxy - sx*sy) / d
	a = (sy - b*sx) / n
	if den := (n*sxx - sx*sx) * (n*syy - sy*sy); den > 0 {
		r := (n*sxy - sx*sy) / math.Sqrt(den)
		r2 = r * r
	}
	return a, b, r2
}

// asciiPlot draws the points (x, y) on axes from 0, with the line through the first and last point
// dotted, so that growth faster than linear shows as points above it.
func asciiPlot(title string, xs, ys []float64) string {
	const width, height = 60, 12
	maxX, maxY := 0.0, 0.0
	for i := range xs {
		maxX, maxY = math.Max(maxX, xs[i]), math.Max(maxY, ys[i])
	}
	if maxX == 0 || maxY == 0 {
		return title + ": nothing to plot\n"
	}
	maxY *= 1.1
	grid := make([][]byte, height+1)
	for r := range grid {
		grid[r] = []byte(strings.Repeat(" ", width+1))
	}
	cell := func(x, y float64) (int, int) {
		return int(math.Round(x / maxX * width)), height - int(math.Round(y/maxY*height))
	}
	if len(xs) > 1 { // the straight line through the first and last point
		x0, y0, x1, y1 := xs[0], ys[0], xs[len(xs)-1], ys[len(ys)-1]
		for c := 0; c <= width; c++ {
			x := float64(c) / width * maxX
			if x < x0 || x > x1 {
				continue
			}
			_, r := cell(x, y0+(y1-y0)*(x-x0)/(x1-x0))
			if r >= 0 && r <= height {
				grid[r][c] = '.'
			}
		}
	}
	for i := range xs {
		c, r := cell(xs[i], ys[i])
		grid[r][c] = '*'
	}
	var b strings.Builder
	fmt.Fprintf(&b, "%s (* measured, . the straight line through the first and last)\n", title)
	for r, line := range grid {
		label := "        "
		if r == 0 || r == height/2 || r == height {
			label = fmt.Sprintf("%7.1f ", maxY*float64(height-r)/height)
		}
		fmt.Fprintf(&b, "%s|%s\n", label, strings.TrimRight(string(line), " "))
	}
	fmt.Fprintf(&b, "        +%s\n", strings.Repeat("-", width+1))
	fmt.Fprintf(&b, "        0%*s\n", width, fmt.Sprintf("N = %.0f", maxX))
	return b.String()
}
