// Command report turns the raw results of test/scripts/bench.sh (one JSON object per line) into
// docs/benchmarks.md and a PNG plot, and prints the results table.
package main

import (
	"bufio"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"github.com/kubeforge/kubeforge/internal/atomicfile"
	"image/color"
	"io"
	"math"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/vg"
	"gonum.org/v1/plot/vg/draw"
)

// Measure is test/bench/measure's JSON.
type Measure struct {
	WallS     float64 `json:"wall_s"`
	UserS     float64 `json:"user_s"`
	SysS      float64 `json:"sys_s"`
	MaxRSSMB  float64 `json:"max_rss_mb"`
	TreeRSSMB float64 `json:"tree_rss_mb"`
	TreePSSMB float64 `json:"tree_pss_mb"`
	Procs     int     `json:"procs"`
}

// Detail is test/bench/fanout's JSON.
type Detail struct {
	Hosts     int                           `json:"hosts"`
	WallS     float64                       `json:"wall_s"`
	HashS     float64                       `json:"hash_s"`
	Steps     map[string]float64            `json:"steps"`
	HostSteps map[string]map[string]float64 `json:"host_steps"`
	Changed   int                           `json:"changed"`
	Facts     map[string]string             `json:"facts"`
	Fanout    int                           `json:"fanout"`
	Uploaded  int64                         `json:"uploaded_bytes"`
	Fetched   int64                         `json:"fetched_bytes"`
	Fallbacks int                           `json:"fallbacks"`
}

// Record is one line of results.jsonl.
type Record struct {
	Kind    string   `json:"kind"`
	Tool    string   `json:"tool"`
	Mode    string   `json:"mode"`
	N       int      `json:"n"`
	Rep     int      `json:"rep"`
	Measure *Measure `json:"measure"`
	Small   *Measure `json:"small"` // scp: the same scp of a small file (connection cost)
	Detail  *Detail  `json:"detail"`
	Wire    int64    `json:"wire_bytes"` // bytes this machine sent onto the bench network during the run

	// meta
	Date    string `json:"date"`
	CPU     string `json:"cpu"`
	Cores   string `json:"cores"`
	Mem     string `json:"mem"`
	Kernel  string `json:"kernel"`
	OS      string `json:"os"`
	Go      string `json:"go"`
	Ansible string `json:"ansible"`
	OpenSSH string `json:"openssh"`
	Load    string `json:"load"`
	Cipher  string `json:"cipher"`
	NS      string `json:"ns"`
	Reps    int    `json:"reps"`
	SizeMB  int    `json:"size_mb"`
	Seconds int    `json:"seconds"`
	Quick   string `json:"quick"`
}

// stat is a median with its range.
type stat struct{ med, min, max float64 }

func summarize(xs []float64) stat {
	if len(xs) == 0 {
		return stat{math.NaN(), math.NaN(), math.NaN()}
	}
	s := append([]float64(nil), xs...)
	sort.Float64s(s)
	m := s[len(s)/2]
	if len(s)%2 == 0 {
		m = (s[len(s)/2-1] + s[len(s)/2]) / 2
	}
	return stat{m, s[0], s[len(s)-1]}
}

func (s stat) String() string { return s.fmt("%.2f") }

func (s stat) fmt(f string) string {
	if math.IsNaN(s.med) {
		return "–"
	}
	if s.min == s.max {
		return fmt.Sprintf(f, s.med)
	}
	return fmt.Sprintf(f+" ("+f+"–"+f+")", s.med, s.min, s.max)
}

type key struct {
	tool, mode string
	n          int
}

type data struct {
	meta Record
	runs map[key][]Record
	ns   []int
	scp  []Record
	sftp []Record
}

func load(path string) (*data, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("read results: %w", err)
	}
	defer f.Close()
	d := &data{runs: map[key][]Record{}}
	seen := map[int]bool{}
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 16<<20)
	line := 0
	for sc.Scan() {
		line++
		if strings.TrimSpace(sc.Text()) == "" {
			continue
		}
		var r Record
		if err := json.Unmarshal(sc.Bytes(), &r); err != nil {
			return nil, fmt.Errorf("read results %s:%d: %w", path, line, err)
		}
		switch r.Kind {
		case "run":
			if r.Measure == nil {
				return nil, fmt.Errorf("read results %s:%d: run without measure", path, line)
			}
			d.runs[key{r.Tool, r.Mode, r.N}] = append(d.runs[key{r.Tool, r.Mode, r.N}], r)
			if !seen[r.N] {
				seen[r.N] = true
				d.ns = append(d.ns, r.N)
			}
		case "scp":
			d.scp = append(d.scp, r)
		case "sftp":
			d.sftp = append(d.sftp, r)
		case "meta":
			d.meta = r
		}
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("read results: %w", err)
	}
	if len(d.ns) == 0 {
		return nil, fmt.Errorf("read results %s: no runs", path)
	}
	sort.Ints(d.ns)
	return d, nil
}

func (d *data) stat(tool, mode string, n int, f func(Record) float64) stat {
	var xs []float64
	for _, r := range d.runs[key{tool, mode, n}] {
		xs = append(xs, f(r))
	}
	return summarize(xs)
}

var (
	wall = func(r Record) float64 { return r.Measure.WallS }
	cpu  = func(r Record) float64 { return r.Measure.UserS + r.Measure.SysS }
	rss  = func(r Record) float64 { return r.Measure.MaxRSSMB }
	pss  = func(r Record) float64 { return r.Measure.TreePSSMB }
	sent = func(r Record) float64 { return float64(r.Wire) / 1e6 }
)

// ratio is Ansible's over kubeforge's value, per repetition (the runs of one repetition are interleaved).
func (d *data) ratio(mode string, n int, f func(Record) float64) stat {
	byRep := map[int]float64{}
	for _, r := range d.runs[key{"kubeforge", mode, n}] {
		byRep[r.Rep] = f(r)
	}
	var xs []float64
	for _, r := range d.runs[key{"ansible", mode, n}] {
		if k, ok := byRep[r.Rep]; ok && k > 0 {
			xs = append(xs, f(r)/k)
		}
	}
	return summarize(xs)
}

func (d *data) step(mode string, n int, name string) stat {
	var xs []float64
	for _, r := range d.runs[key{"kubeforge", mode, n}] {
		if r.Detail != nil {
			xs = append(xs, r.Detail.Steps[name])
		}
	}
	return summarize(xs)
}

// transfer returns scp's and kubeforge's single-host upload throughput (MB/s) and scp's seconds per payload.
func (d *data) transfer() (scp, sftp stat, secs float64) {
	size := float64(d.meta.SizeMB)
	var a, b, t []float64
	for _, r := range d.scp {
		if r.Measure == nil || r.Small == nil {
			continue
		}
		if s := r.Measure.WallS - r.Small.WallS; s > 0 {
			a = append(a, size/s)
			t = append(t, s)
		}
	}
	for _, r := range d.sftp {
		if r.Detail != nil && r.Detail.Steps["upload"] > 0 {
			b = append(b, size/r.Detail.Steps["upload"])
		}
	}
	return summarize(a), summarize(b), summarize(t).med
}

func main() {
	results := flag.String("results", "", "results.jsonl from bench.sh")
	profile := flag.String("profile", "", "pprof -top output (optional)")
	profileCum := flag.String("profile-cum", "", "pprof -top -cum output (optional)")
	up := flag.String("up", "", "P2 results (optional)")
	notes := flag.String("notes", "test/bench/notes.md", "hand-written analysis included in the document (optional)")
	doc := flag.String("doc", "docs/benchmarks.md", "markdown to write")
	png := flag.String("plot", "docs/benchmarks-fanout.png", "PNG to write")
	flag.Parse()
	if err := run(*results, *profile, *profileCum, *up, *notes, *doc, *png); err != nil {
		fmt.Fprintln(os.Stderr, "report:", err)
		os.Exit(1)
	}
}

func run(results, profile, profileCum, up, notes, doc, png string) error {
	if results == "" {
		return errors.New("usage: report -results FILE [-doc FILE] [-plot FILE]")
	}
	d, err := load(results)
	if err != nil {
		return err
	}
	table := d.table()
	fmt.Print(table)
	if err := writePlot(d, png); err != nil {
		return err
	}
	var b strings.Builder
	d.document(&b, table, readOptional(profile), readOptional(profileCum), readOptional(up), readOptional(notes), filepath.Base(png))
	return atomicfile.Write(doc, []byte(b.String()), 0o644)
}

func readOptional(p string) string {
	if p == "" {
		return ""
	}
	b, err := os.ReadFile(p)
	if err != nil {
		return ""
	}
	return string(b)
}

// table is the main results table (markdown, also printed).
func (d *data) table() string {
	var b strings.Builder
	fmt.Fprintln(&b, "| N | run | kubeforge wall s | Ansible wall s | Ansible ÷ kubeforge | kubeforge CPU s | Ansible CPU s | kubeforge peak RSS MB | Ansible peak RSS MB (largest process / tree PSS) | MB sent from here: kubeforge / Ansible |")
	fmt.Fprintln(&b, "|---:|---|---|---|---|---|---|---|---|---|")
	for _, n := range d.ns {
		for _, mode := range []string{"cold", "warm"} {
			fmt.Fprintf(&b, "| %d | %s | %s | %s | %s | %s | %s | %s | %s / %s | %s / %s |\n", n, mode,
				d.stat("kubeforge", mode, n, wall), d.stat("ansible", mode, n, wall), d.ratio(mode, n, wall).fmt("%.1f×"),
				d.stat("kubeforge", mode, n, cpu), d.stat("ansible", mode, n, cpu),
				d.stat("kubeforge", mode, n, rss).fmt("%.0f"),
				d.stat("ansible", mode, n, rss).fmt("%.0f"), d.stat("ansible", mode, n, pss).fmt("%.0f"),
				d.stat("kubeforge", mode, n, sent).fmt("%.0f"), d.stat("ansible", mode, n, sent).fmt("%.0f"))
		}
	}
	return b.String()
}

func (d *data) document(b io.Writer, table, profile, profileCum, up, notes, png string) {
	m := d.meta
	p := func(format string, a ...any) { fmt.Fprintf(b, format, a...) }
	p("# Benchmarks\n\n")
	p("Generated by `make bench` (`bash test/scripts/bench.sh`; the analysis section is `test/bench/notes.md`). ")
	p("Reproduce with:\n\n```sh\nmake bench                                   # N = %s, %d repetitions (about %d minutes here)\n", "1 5 10 20 30", 3, max(1, m.Seconds/60+1))
	p("BENCH_QUICK=1 make bench                     # smoke run: N = 1 5, 1 repetition, 20 MB\n")
	p("BENCH_NS=\"1 10\" BENCH_REPS=5 make bench       # any host counts and repetitions\n")
	p("BENCH_UP=1 make bench                        # also P2, the cost of `up` (needs a working `kubeforge up`)\n```\n\n")
	if m.Quick == "1" || m.Reps < 3 {
		p("**This file was written by a reduced run (N = %s, %d repetition(s), %d MB): its figures are a smoke test, not the benchmark.**\n\n", m.NS, m.Reps, m.SizeMB)
	}
	p("## Machine\n\n")
	p("- %s, %s, %s cores, %s RAM, kernel %s — shared with other jobs (load average at the end: %s)\n", m.Date, m.CPU, m.Cores, m.Mem, m.Kernel, m.Load)
	p("- %s; %s; %s; %s\n", m.OS, m.Go, m.Ansible, m.OpenSSH)
	p("- hosts: N containers of `kubeforge-bench-sshd:bookworm` (the harness node image + python3, running only sshd, "+
		"default sshd_config), docker network `kubeforge-bench` 172.31.240.0/24, the upload directory a tmpfs; "+
		"host keys read from each container into one known_hosts file, checked strictly by both tools; SSH cipher negotiated by OpenSSH's client: %s\n", orDash(m.Cipher))
	p("- this run: N = %s, %d repetitions, %d MB payload, P1 took %d s\n\n", m.NS, m.Reps, m.SizeMB, m.Seconds)

	p("## What is measured (P1, fan-out)\n\n")
	p("The same work by both tools on the first N hosts: connect (host key checked); gather facts (OS, kernel, memory, swap, "+
		"listening TCP ports); upload a %d MB binary and two small files to `/opt/bench` (mode and owner set; skipped when the "+
		"remote sha256/sha1 already matches); run one command (`uname -a`).\n\n", m.SizeMB)
	p("- **cold**: the files are absent (removed from every host before the run, outside the measurement); **warm**: the same run again right after, every file skipped by checksum.\n")
	p("- Every run is a new process with no open connection (Ansible gets a fresh ControlPath directory per run, so no master " +
		"survives from an earlier run), and the runs are interleaved: for each repetition and N, one tool does cold+warm, then the " +
		"other, the order alternating. Figures are median (min–max) over the repetitions; the Ansible ÷ kubeforge ratio is taken " +
		"per repetition, then its median (min–max).\n")
	p("- **wall**: until the tool's process exits. **CPU**: user+system of the whole process tree, ssh ControlPersist masters " +
		"included (test/bench/measure becomes the child subreaper, so daemonised masters are reaped and counted after it stops them). " +
		"**peak RSS**: the largest ru_maxrss of one process; for Ansible also the peak of the tree's summed PSS (its forks share pages), sampled every 50 ms.\n")
	p("- kubeforge: `test/bench/fanout`, a program in the main module running a 4-step playbook through `playbooks.Runner` " +
		"(concurrency N) with `tasks.Connect`, `tasks.GatherFacts`, `ssh.Client.Upload` (the local files hashed once per run, " +
		"as the artifacts task does; one remote `sha256sum` for the three files; SFTP streaming, fsync, rename) and `ssh.Client.Run`. " +
		"It fails unless a cold run wrote 3N files and a warm one none.\n")
	p("- Ansible: `test/bench/ansible/ansible.cfg` and `fanout.yml`, run as `ansible-playbook -i hosts-N.ini -f N -e bench_src=DIR test/bench/ansible/fanout.yml`. " +
		"Tuning: forks = N; `pipelining = True`; `ControlMaster=auto`, `ControlPersist=60s` (one connection per host for all " +
		"tasks of a run); `gathering = explicit` and `setup` with `gather_subset: ['!all','!min','distribution','platform','hardware']` " +
		"(the smallest subset holding OS, kernel, memory and swap; ansible-core has no listening-ports fact, so one `command` task reads " +
		"/proc/net/tcp as kubeforge's facts script does); `interpreter_python` fixed (no discovery); `transfer_method = sftp`; " +
		"`copy` with a 3-item loop; `command` for the command; host key checking on against the same known_hosts file. bench.sh " +
		"fails unless the recap shows every host ok, `changed=1` cold and `changed=0` warm.\n\n")

	p("## Results\n\n")
	p("%s\n", table)
	p("![wall time against N](%s)\n\n", png)

	p("### kubeforge per step (wall s, median (min–max))\n\n")
	p("| N | run | connect | facts | upload | command |\n|---:|---|---|---|---|---|\n")
	for _, n := range d.ns {
		for _, mode := range []string{"cold", "warm"} {
			p("| %d | %s | %s | %s | %s | %s |\n", n, mode, d.step(mode, n, "connect"), d.step(mode, n, "facts"), d.step(mode, n, "upload"), d.step(mode, n, "command"))
		}
	}
	scpT, sftpT, scpSecs := d.transfer()
	p("\n### Raw transfer, one host, %d MB\n\n", m.SizeMB)
	p("| | MB/s, median (min–max) |\n|---|---|\n| `scp` (OpenSSH, %s; the time of an scp of a small file subtracted) | %s |\n| kubeforge upload step (sha256 check + SFTP + fsync + rename, 3 files) | %s |\n\n",
		orDash(m.Cipher), scpT.fmt("%.0f"), sftpT.fmt("%.0f"))
	if scpT.med > 0 && sftpT.med > 0 {
		p("kubeforge's SFTP upload reaches %.0f%% of scp's throughput.\n\n", 100*sftpT.med/scpT.med)
	}

	p("## Targets\n\n")
	d.targets(p, scpSecs)

	p("\n## Where kubeforge's time goes\n\n")
	if profile != "" {
		p("CPU profile of `test/bench/fanout`, N = %d, cold (one extra run; `go tool pprof -top`):\n\n```\n%s```\n\n", d.ns[len(d.ns)-1], profile)
	}
	if profileCum != "" {
		p("The same profile, cumulative:\n\n```\n%s```\n\n", profileCum)
	}
	if notes != "" {
		p("%s\n", strings.TrimSpace(notes))
	}

	p("\n## P2: the cost of `up`\n\n")
	if strings.TrimSpace(up) != "" {
		p("%s\n", strings.TrimSpace(up))
	} else {
		p("Not measured in this run. `BENCH_UP=1 make bench` runs it (bench.sh, section P2): on a 1 control plane + 2 workers " +
			"harness with the artifacts already pushed it times `kubeforge up` with its per-step breakdown (`--output json` step-end " +
			"events), the floor (kubelet start to API server healthy plus node registration, measured on the same hosts), `kubeadm init` / " +
			"`kubeadm join` driven by an ssh shell loop with the artifacts' kubeadm, a second `up` on the converged cluster, and `scale` " +
			"adding 1 vs 3 workers.\n")
	}
}

func (d *data) targets(p func(string, ...any), scpSecs float64) {
	has := func(n int) bool { return len(d.runs[key{"kubeforge", "cold", n}]) > 0 }
	verdict := func(ok bool) string {
		if ok {
			return "**met**"
		}
		return "**missed**"
	}
	if has(10) {
		for _, mode := range []string{"cold", "warm"} {
			r := d.ratio(mode, 10, wall)
			p("- kubeforge ≥ 10× faster than Ansible at N = 10 (%s): Ansible ÷ kubeforge = %s → %s", mode, r.fmt("%.1f×"), verdict(r.med >= 10))
			if r.med < 10 {
				p(" (%.0f%% of the target)", 100*r.med/10)
			}
			p("\n")
		}
	} else {
		p("- kubeforge ≥ 10× faster than Ansible at N = 10: not measured in this run (N = 10 not in the list)\n")
	}
	lo, hi := d.ns[0], d.ns[len(d.ns)-1]
	if lo == 1 && hi > 1 {
		for _, mode := range []string{"cold", "warm"} {
			t1, tn := d.stat("kubeforge", mode, 1, wall).med, d.stat("kubeforge", mode, hi, wall).med
			p("- kubeforge T(%d)/T(1), %s: %.2f s / %.2f s = %.2f", hi, mode, tn, t1, tn/t1)
			if mode == "warm" {
				p(" (no transfer: this is the fan-out overhead alone) → %s\n", verdict(tn/t1 <= 2))
			} else {
				u1, un := d.step(mode, 1, "upload").med, d.step(mode, hi, "upload").med
				p("; beyond the transfer (wall minus the upload step, which is the transfer plus its checksum check): "+
					"(%.2f − %.2f) / (%.2f − %.2f) = %.2f → %s\n", tn, un, t1, u1, (tn-un)/(t1-u1), verdict((tn-un)/(t1-u1) <= 2))
				if scpSecs > 0 {
					p("  (For scale: one scp of the payload takes %.2f s; N × that is %.1f s at N = %d, more than kubeforge's whole cold run, "+
						"because parallel streams use both cores: so N × scp is no usable \"pure transfer time\" here.)\n", scpSecs, float64(hi)*scpSecs, hi)
				}
			}
		}
	}
	for _, n := range d.ns {
		if n < 2 || len(d.runs[key{"kubeforge", "cold", n}]) == 0 || d.meta.SizeMB == 0 {
			continue
		}
		// The payload: one SizeMB file and two small ones.
		copies := d.stat("kubeforge", "cold", n, sent).med / (float64(d.meta.SizeMB) * 1.048576)
		p("- bytes sent from here ≤ 2 copies of the payload at N = %d (cold): %.2f copies → %s\n", n, copies, verdict(copies <= 2))
	}
	if len(d.runs[key{"kubeforge", "cold", hi}]) > 0 {
		r := d.stat("kubeforge", "cold", hi, rss)
		p("- kubeforge peak RSS ≤ 150 MB at N = %d: %s MB → %s", hi, r.fmt("%.0f"), verdict(r.max <= 150))
		if hi < 30 {
			p(" (this run's largest N is %d, not 30)", hi)
		}
		p("\n")
	}
}

func orDash(s string) string {
	if s == "" {
		return "–"
	}
	return s
}

// writePlot draws wall time against N for both tools, cold and warm, with min–max error bars.
func writePlot(d *data, path string) error {
	p := plot.New()
	p.Title.Text = fmt.Sprintf("Fan-out: connect, facts, %d MB + 2 small files, one command", d.meta.SizeMB)
	p.X.Label.Text = "hosts (N)"
	p.Y.Label.Text = "wall time, s (log scale; median, bars min–max)"
	p.Y.Scale = plot.LogScale{}
	p.Y.Tick.Marker = ticks125{}
	p.Legend.Top = true
	p.Legend.Left = true
	p.Add(plotter.NewGrid())
	series := []struct {
		tool, mode, label string
		c                 color.RGBA
		dash              []vg.Length
		shape             draw.GlyphDrawer
	}{
		{"kubeforge", "cold", "kubeforge cold", color.RGBA{0x1f, 0x77, 0xb4, 255}, nil, draw.CircleGlyph{}},
		{"kubeforge", "warm", "kubeforge warm", color.RGBA{0x1f, 0x77, 0xb4, 255}, []vg.Length{vg.Points(4), vg.Points(3)}, draw.SquareGlyph{}},
		{"ansible", "cold", "Ansible cold", color.RGBA{0xd6, 0x27, 0x28, 255}, nil, draw.CircleGlyph{}},
		{"ansible", "warm", "Ansible warm", color.RGBA{0xd6, 0x27, 0x28, 255}, []vg.Length{vg.Points(4), vg.Points(3)}, draw.SquareGlyph{}},
	}
	for _, s := range series {
		var pts plotter.XYs
		var errs plotter.YErrors
		for _, n := range d.ns {
			st := d.stat(s.tool, s.mode, n, wall)
			if math.IsNaN(st.med) {
				continue
			}
			pts = append(pts, plotter.XY{X: float64(n), Y: st.med})
			errs = append(errs, struct{ Low, High float64 }{st.med - st.min, st.max - st.med})
		}
		if len(pts) == 0 {
			continue
		}
		line, points, err := plotter.NewLinePoints(pts)
		if err != nil {
			return fmt.Errorf("plot %s: %w", s.label, err)
		}
		line.Color, line.Width, line.Dashes = s.c, vg.Points(1.5), s.dash
		points.Color, points.Shape, points.Radius = s.c, s.shape, vg.Points(3)
		eb, err := plotter.NewYErrorBars(struct {
			plotter.XYer
			plotter.YErrorer
		}{pts, errs})
		if err != nil {
			return fmt.Errorf("plot %s: %w", s.label, err)
		}
		eb.Color = s.c
		p.Add(line, points, eb)
		p.Legend.Add(s.label, line, points)
	}
	var ticks []plot.Tick
	for _, n := range d.ns {
		ticks = append(ticks, plot.Tick{Value: float64(n), Label: fmt.Sprint(n)})
	}
	p.X.Tick.Marker = plot.ConstantTicks(ticks)
	p.X.Min = 0
	w, err := p.WriterTo(9*vg.Inch, 5.5*vg.Inch, "png")
	if err != nil {
		return fmt.Errorf("render plot: %w", err)
	}
	var buf strings.Builder
	if _, err := w.WriteTo(&buf); err != nil {
		return fmt.Errorf("render plot: %w", err)
	}
	return atomicfile.Write(path, []byte(buf.String()), 0o644)
}

// ticks125 marks 1, 2, 5 times powers of ten, all labelled: log axes of a few decades stay readable.
type ticks125 struct{}

// Ticks implements plot.Ticker.
func (ticks125) Ticks(min, max float64) []plot.Tick {
	var out []plot.Tick
	for e := math.Floor(math.Log10(min)) - 1; e <= math.Ceil(math.Log10(max)); e++ {
		for _, m := range []float64{1, 2, 5} {
			v := m * math.Pow(10, e)
			if v >= min && v <= max {
				out = append(out, plot.Tick{Value: v, Label: strconv.FormatFloat(v, 'g', -1, 64)})
			}
		}
	}
	return out
}
