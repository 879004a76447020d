// Command cis is the Go half of `make cis` (test/scripts/cis.sh), which measures a kubeforge cluster against the
// CIS Kubernetes Benchmark with kube-bench:
//
//	go run ./test/cis ssh-config -i INVENTORY -o FILE
//	go run ./test/cis summary HOST=RESULT.json ...
//
// ssh-config writes an OpenSSH client config with the aliases cis-control-plane (the inventory's first control
// plane) and cis-worker (its first worker, or the control plane when there is none), from the inventory's SSH
// settings: user, port, identity files, known_hosts files and bastion. It prints "ALIAS HOST" per target.
//
// summary reads kube-bench's JSON (`kube-bench run --json`), one file per host, and prints a table of each
// section's automated checks by result with the manual checks counted apart, then every automated check that
// failed or warned, with what it audits and kube-bench's remediation.
package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/kubeforge/kubeforge/internal/atomicfile"
	"github.com/kubeforge/kubeforge/inventory"
)

const usage = `usage:
  cis ssh-config -i INVENTORY -o FILE   write an ssh config for the benchmark's two hosts; print "ALIAS HOST"
  cis summary HOST=RESULT.json ...      summarise kube-bench's JSON results
`

func main() {
	if err := run(os.Args[1:], os.Stdout, os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, "cis:", err)
		os.Exit(1)
	}
}

func run(args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return errors.New("missing command")
	}
	cmd, args := args[0], args[1:]
	switch cmd {
	case "ssh-config":
		fs := flag.NewFlagSet("cis ssh-config", flag.ContinueOnError)
		fs.SetOutput(stderr)
		invPath := fs.String("i", "", "kubeforge inventory file")
		out := fs.String("o", "", "ssh config file to write")
		if err := fs.Parse(args); err != nil {
			return err
		}
		if *invPath == "" || *out == "" || fs.NArg() != 0 {
			return errors.New("ssh-config needs -i INVENTORY and -o FILE and no arguments")
		}
		inv, err := inventory.Load(*invPath)
		if err != nil {
			return fmt.Errorf("load inventory: %w", err)
		}
		conf, targets, err := sshConfig(inv)
		if err != nil {
			return err
		}
		if err := atomicfile.Write(*out, []byte(conf), 0o600); err != nil {
			return err
		}
		for _, t := range targets {
			fmt.Fprintf(stdout, "%s %s\n", t.Alias, t.Host)
		}
		return nil
	case "summary":
		if len(args) == 0 {
			return errors.New("summary needs at least one HOST=RESULT.json")
		}
		var results []hostResult
		for _, a := range args {
			host, path, ok := strings.Cut(a, "=")
			if !ok || host == "" || path == "" {
				return fmt.Errorf("want HOST=RESULT.json, got %q", a)
			}
			b, err := os.ReadFile(path)
			if err != nil {
				return fmt.Errorf("read result: %w", err)
			}
			r, err := parseResult(host, b)
			if err != nil {
				return fmt.Errorf("parse %s: %w", path, err)
			}
			results = append(results, r)
		}
		return writeSummary(stdout, results)
	default:
		fmt.Fprint(stderr, usage)
		return fmt.Errorf("unknown command %q", cmd)
	}
}
