// Command measure runs a command and reports, as one JSON line, what the whole process tree cost:
// wall time (until the command itself exits), user and system CPU of every process of the tree
// (including daemons it left behind, such as ssh ControlPersist masters, which measure adopts as a
// child subreaper, stops with SIGTERM after the command exits and reaps), the largest single-process
// peak RSS (getrusage ru_maxrss), and the peak of the tree's summed RSS and PSS sampled from /proc.
//
//	measure [-o FILE] [-interval 50ms] -- CMD ARGS...
//
// The exit status of CMD is reported in the JSON ("exit") and is measure's own exit status.
package main

import (
	"bufio"
	"encoding/json"
	"flag"
	"fmt"
	"github.com/kubeforge/kubeforge/internal/atomicfile"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// Result is what measure prints.
type Result struct {
	Cmd       string  `json:"cmd"`
	Exit      int     `json:"exit"`
	WallS     float64 `json:"wall_s"`
	UserS     float64 `json:"user_s"`
	SysS      float64 `json:"sys_s"`
	MaxRSSMB  float64 `json:"max_rss_mb"`  // largest ru_maxrss of one process of the tree
	TreeRSSMB float64 `json:"tree_rss_mb"` // peak of the sum of the tree's RSS (shared pages counted per process)
	TreePSSMB float64 `json:"tree_pss_mb"` // peak of the sum of the tree's PSS (shared pages split)
	Procs     int     `json:"procs"`       // processes reaped
}

func main() {
	out := flag.String("o", "", "write the JSON line to this file too")
	interval := flag.Duration("interval", 50*time.Millisecond, "sampling interval of the tree's memory")
	flag.Parse()
	if flag.NArg() == 0 {
		fmt.Fprintln(os.Stderr, "usage: measure [-o FILE] -- CMD ARGS...")
		os.Exit(2)
	}
	res, err := run(flag.Args(), *interval)
	if err != nil {
		fmt.Fprintln(os.Stderr, "measure:", err)
		os.Exit(2)
	}
	line, _ := json.Marshal(res)
	fmt.Fprintln(os.Stderr, string(line))
	if *out != "" {
		if err := atomicfile.Write(*out, append(line, '\n'), 0o644); err != nil {
			fmt.Fprintln(os.Stderr, "measure:", err)
			os.Exit(2)
		}
	}
	os.Exit(res.Exit)
}

func run(args []string, interval time.Duration) (*Result, error) {
	// Orphans of the tree (daemonised ssh masters) are re-parented to us, so we reap them and count them.
	if err := unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0); err != nil {
		return nil, fmt.Errorf("become subreaper: %w", err)
	}
	path, err := exec.LookPath(args[0])
	if err != nil {
		return nil, fmt.Errorf("find %s: %w", args[0], err)
	}
	start := time.Now()
	pid, err := syscall.ForkExec(path, args, &syscall.ProcAttr{
		Env:   os.Environ(),
		Files: []uintptr{0, 1, 2},
		Sys:   &syscall.SysProcAttr{Setpgid: true},
	})
	if err != nil {
		return nil, fmt.Errorf("start %s: %w", args[0], err)
	}
	self := os.Getpid()
	var mu sync.Mutex
	var peakRSS, peakPSS float64
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		t := time.NewTicker(interval)
		defer t.Stop()
		for {
			rss, pss := treeMemory(self)
			mu.Lock()
			peakRSS = max(peakRSS, rss)
			peakPSS = max(peakPSS, pss)
			mu.Unlock()
			select {
			case <-stop:
				return
			case <-t.C:
			}
		}
	}()

	res := &Result{Cmd: strings.Join(args, " ")}
	var utime, stime time.Duration
	var maxrss int64
	mainDone := false
	for {
		var ws syscall.WaitStatus
		var ru syscall.Rusage
		wpid, err := syscall.Wait4(-1, &ws, 0, &ru)
		if err == syscall.EINTR {
			continue
		}
		if err == syscall.ECHILD {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("wait: %w", err)
		}
		res.Procs++
		utime += time.Duration(ru.Utime.Nano())
		stime += time.Duration(ru.Stime.Nano())
		maxrss = max(maxrss, ru.Maxrss)
		if wpid == pid {
			mainDone = true
			res.WallS = time.Since(start).Seconds()
			res.Exit = ws.ExitStatus()
			if ws.Signaled() {
				res.Exit = 128 + int(ws.Signal())
			}
			// Whatever the command left running (ssh ControlPersist masters) is part of its cost: stop and reap it.
			for _, c := range children(self) {
				_ = syscall.Kill(c, syscall.SIGTERM)
			}
		} else if mainDone {
			for _, c := range children(self) {
				_ = syscall.Kill(c, syscall.SIGTERM)
			}
		}
	}
	close(stop)
	<-done
	res.UserS = utime.Seconds()
	res.SysS = stime.Seconds()
	res.MaxRSSMB = float64(maxrss) / 1024 // ru_maxrss is in KiB on Linux
	mu.Lock()
	res.TreeRSSMB, res.TreePSSMB = peakRSS/1024, peakPSS/1024
	mu.Unlock()
	return res, nil
}

// procs maps pid -> ppid for every process.
func procs() map[int]int {
	out := map[int]int{}
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "stat"))
		if err != nil {
			continue
		}
		// pid (comm) state ppid ...: comm may hold spaces and parentheses.
		s := string(b)
		i := strings.LastIndexByte(s, ')')
		if i < 0 {
			continue
		}
		f := strings.Fields(s[i+1:])
		if len(f) < 2 {
			continue
		}
		ppid, _ := strconv.Atoi(f[1])
		out[pid] = ppid
	}
	return out
}

// descendants returns every process below root.
func descendants(root int) []int {
	pp := procs()
	kids := map[int][]int{}
	for p, pa := range pp {
		kids[pa] = append(kids[pa], p)
	}
	var out []int
	stack := append([]int(nil), kids[root]...)
	for len(stack) > 0 {
		p := stack[len(stack)-1]
		stack = stack[:len(stack)-1]
		out = append(out, p)
		stack = append(stack, kids[p]...)
	}
	return out
}

// children returns the direct children of root.
func children(root int) []int {
	var out []int
	for p, pa := range procs() {
		if pa == root {
			out = append(out, p)
		}
	}
	return out
}

// treeMemory sums RSS and PSS (KiB) over root's descendants.
func treeMemory(root int) (rss, pss float64) {
	for _, p := range descendants(root) {
		f, err := os.Open(filepath.Join("/proc", strconv.Itoa(p), "smaps_rollup"))
		if err != nil {
			continue
		}
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			k, v, ok := strings.Cut(sc.Text(), ":")
			if !ok {
				continue
			}
			fs := strings.Fields(v)
			if len(fs) == 0 {
				continue
			}
			n, _ := strconv.ParseFloat(fs[0], 64)
			switch k {
			case "Rss":
				rss += n
			case "Pss":
				pss += n
			}
		}
		f.Close()
	}
	return rss, pss
}
