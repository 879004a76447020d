package conformance

import (
	"bufio"
	"context"
	"encoding/xml"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Options are what one run of the suite needs.
type Options struct {
	Bundle     *Bundle
	Kubeconfig string // the admin kubeconfig
	ReportDir  string // JUnit reports and each phase's ginkgo output
	// Procs runs the non-serial specs in that many ginkgo processes.
	Procs int
	// LabelFilter selects the specs (ginkgo's label filter): "Conformance" by default. Each phase adds
	// "&& !Serial" or "&& Serial": since v1.37 a spec's name puts [Serial] after [Conformance], so only the
	// labels tell them apart.
	LabelFilter string
	Focus, Skip string // ginkgo --focus / --skip regular expressions on spec names
	// Phases to run, in order: "parallel" and "serial" (both when empty).
	Phases   []string
	Progress io.Writer
}

// Phase names.
const (
	PhaseParallel = "parallel"
	PhaseSerial   = "serial"
)

// Summary is what the JUnit reports of a run say.
type Summary struct {
	Phases   []PhaseSummary
	Duration time.Duration
}

// PhaseSummary counts one phase's specs; Failures name the failed ones with the first line of their failure.
type PhaseSummary struct {
	Name                    string
	Passed, Failed, Skipped int
	Failures                []Failure
	Duration                time.Duration
	JUnit                   string
}

// Failure is one failed spec.
type Failure struct {
	Spec, Message string
}

// Failed is the number of failed specs in every phase.
func (s *Summary) Failed() int {
	n := 0
	for _, p := range s.Phases {
		n += p.Failed
	}
	return n
}

// Run runs the phases one after the other and returns their summary; an error only when a phase could not run
// or wrote no report (failed specs are in the summary).
func Run(ctx context.Context, o Options) (*Summary, error) {
	if o.LabelFilter == "" {
		o.LabelFilter = "Conformance"
	}
	if o.Procs < 1 {
		o.Procs = 1
	}
	phases := o.Phases
	if len(phases) == 0 {
		phases = []string{PhaseParallel, PhaseSerial}
	}
	if err := os.MkdirAll(o.ReportDir, 0o755); err != nil {
		return nil, err
	}
	start := time.Now()
	s := &Summary{}
	for _, ph := range phases {
		p, err := runPhase(ctx, o, ph)
		if p != nil {
			s.Phases = append(s.Phases, *p)
		}
		if err != nil {
			s.Duration = time.Since(start)
			return s, err
		}
	}
	s.Duration = time.Since(start)
	return s, nil
}

func runPhase(ctx context.Context, o Options, phase string) (*PhaseSummary, error) {
	filter := "(" + o.LabelFilter + ")"
	procs := o.Procs
	switch phase {
	case PhaseParallel:
		filter += " && !Serial"
	case PhaseSerial:
		filter += " && Serial"
		procs = 1
	default:
		return nil, fmt.Errorf("unknown phase %q (parallel or serial)", phase)
	}
	junit := filepath.Join(o.ReportDir, "junit_"+phase+".xml")
	_ = os.Remove(junit)
	args := []string{"--no-color", "--procs=" + strconv.Itoa(procs), "--label-filter=" + filter,
		"--timeout=3h", "--output-dir=" + o.ReportDir, "--junit-report=" + filepath.Base(junit)}
	if o.Focus != "" {
		args = append(args, "--focus="+o.Focus)
	}
	if o.Skip != "" {
		args = append(args, "--skip="+o.Skip)
	}
	args = append(args, o.Bundle.E2ETest(), "--",
		"--kubeconfig="+o.Kubeconfig, "--provider=skeleton", "--kubectl-path="+o.Bundle.Kubectl(),
		"--report-dir="+filepath.Join(o.ReportDir, "e2e-"+phase), "--disable-log-dump")
	logPath := filepath.Join(o.ReportDir, "ginkgo_"+phase+".log")
	logFile, err := os.Create(logPath)
	if err != nil {
		return nil, err
	}
	defer logFile.Close()
	cmd := exec.CommandContext(ctx, o.Bundle.Ginkgo(), args...)
	cmd.Dir = o.ReportDir
	cmd.Env = append(os.Environ(), "KUBECONFIG="+o.Kubeconfig)
	pr, pw := io.Pipe()
	cmd.Stdout, cmd.Stderr = pw, pw
	start := time.Now()
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start ginkgo: %w", err)
	}
	var wg sync.WaitGroup
	wg.Add(1)
	progress := &progress{w: o.Progress, phase: phase, start: start}
	go func() {
		defer wg.Done()
		progress.follow(io.TeeReader(pr, logFile))
	}()
	runErr := cmd.Wait()
	pw.Close()
	wg.Wait()
	p, err := readJUnit(junit)
	if err != nil {
		if runErr != nil {
			return nil, fmt.Errorf("the %s phase: ginkgo: %v, and no report (%v); its output is in %s", phase, runErr, err, logPath)
		}
		return nil, fmt.Errorf("the %s phase: %w; ginkgo's output is in %s", phase, err, logPath)
	}
	p.Name, p.Duration, p.JUnit = phase, time.Since(start), junit
	return p, nil
}

// progress follows ginkgo's succinct output: "Will run N of M specs", then one "•" for every finished spec, as it
// finishes, with no newline until a report block (a failed spec's opens with "• [FAILED]", "• [PANICKED]",
// "• [TIMEDOUT]" or "• [INTERRUPTED]"), "S" for a skipped one. So it reads runes, not lines.
type progress struct {
	w            io.Writer
	phase        string
	start        time.Time
	total, done  int
	failed       int
	lastReported time.Time
}

var (
	willRun    = regexp.MustCompile(`Will run (\d+) of (\d+) specs`)
	failedSpec = regexp.MustCompile(`^\s*• \[(FAILED|PANICKED|TIMEDOUT|INTERRUPTED|ABORTED)\]`)
)

func (p *progress) follow(r io.Reader) {
	br := bufio.NewReader(r)
	var line strings.Builder
	for {
		c, _, err := br.ReadRune()
		if err != nil {
			break
		}
		switch c {
		case '\n':
			l := line.String()
			line.Reset()
			if m := willRun.FindStringSubmatch(l); m != nil {
				p.total, _ = strconv.Atoi(m[1])
				p.report(true)
			} else if failedSpec.MatchString(l) {
				p.failed++
				p.report(true)
			}
		case '•':
			p.done++
			line.WriteRune(c)
			p.report(false)
		default:
			line.WriteRune(c)
		}
	}
	p.report(true)
}

func (p *progress) report(force bool) {
	if p.w == nil || (!force && time.Since(p.lastReported) < 10*time.Second) {
		return
	}
	p.lastReported = time.Now()
	total := "?"
	if p.total > 0 {
		total = strconv.Itoa(p.total)
	}
	fmt.Fprintf(p.w, "conformance %s: %d/%s specs done, %d failed, %s\n", p.phase, p.done, total, p.failed,
		time.Since(p.start).Round(time.Second))
}

// The JUnit report ginkgo writes: suites of test cases, each with a failure, an error or skipped.
type junitSuites struct {
	Suites []junitSuite `xml:"testsuite"`
}

type junitSuite struct {
	Cases []junitCase `xml:"testcase"`
}

type junitCase struct {
	Name    string        `xml:"name,attr"`
	Status  string        `xml:"status,attr"`
	Failure *junitFailure `xml:"failure"`
	Error   *junitFailure `xml:"error"`
	Skipped *struct{}     `xml:"skipped"`
}

type junitFailure struct {
	Message string `xml:"message,attr"`
	Text    string `xml:",chardata"`
}

// readJUnit counts a report's specs; the suite's own nodes ([SynchronizedBeforeSuite] and the like) are not
// specs and count only when they fail (then every spec failed to run).
func readJUnit(path string) (*PhaseSummary, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read the JUnit report: %w", err)
	}
	var js junitSuites
	if err := xml.Unmarshal(data, &js); err != nil {
		return nil, fmt.Errorf("parse the JUnit report %s: %w", path, err)
	}
	p := &PhaseSummary{}
	for _, s := range js.Suites {
		for _, c := range s.Cases {
			suiteNode := strings.HasPrefix(c.Name, "[") && strings.Contains(strings.SplitN(c.Name, "]", 2)[0], "Suite")
			f := c.Failure
			if f == nil {
				f = c.Error
			}
			switch {
			case f != nil:
				p.Failed++
				p.Failures = append(p.Failures, Failure{Spec: c.Name, Message: firstLine(f.Message, f.Text)})
			case suiteNode:
			case c.Skipped != nil || c.Status == "skipped" || c.Status == "pending":
				p.Skipped++
			default:
				p.Passed++
			}
		}
	}
	sort.Slice(p.Failures, func(i, j int) bool { return p.Failures[i].Spec < p.Failures[j].Spec })
	return p, nil
}

// firstLine is the start of a failure's message, its whitespace collapsed: gomega's messages begin with a bare
// "Expected", so one line says nothing.
func firstLine(candidates ...string) string {
	const max = 300
	for _, s := range candidates {
		if s = strings.Join(strings.Fields(s), " "); s != "" {
			if len(s) > max {
				s = s[:max] + " ..."
			}
			return s
		}
	}
	return ""
}

// Write prints the summary: per phase passed / failed / skipped and its time, then every failure.
func (s *Summary) Write(w io.Writer) {
	for _, p := range s.Phases {
		fmt.Fprintf(w, "%-9s %4d passed  %3d failed  %5d skipped  %s  (%s)\n", p.Name, p.Passed, p.Failed, p.Skipped,
			p.Duration.Round(time.Second), p.JUnit)
	}
	for _, p := range s.Phases {
		for _, f := range p.Failures {
			fmt.Fprintf(w, "FAILED [%s] %s\n    %s\n", p.Name, f.Spec, f.Message)
		}
	}
	fmt.Fprintf(w, "conformance: %d failed, %s in all\n", s.Failed(), s.Duration.Round(time.Second))
}
