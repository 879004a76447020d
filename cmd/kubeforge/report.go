package main

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"github.com/kubeforge/kubeforge/inventory"
	"github.com/kubeforge/kubeforge/playbooks"
	"github.com/kubeforge/kubeforge/ssh"
	"github.com/kubeforge/kubeforge/tasks"
)

// report prints err once, readably, and returns the exit code: 2 for bad
// input (inventory, flags), 1 for failures on hosts.
func report(w io.Writer, err error, g *globals) int {
	var ierr *playbooks.InternalError
	if errors.As(err, &ierr) {
		log := filepath.Join(g.opts.StateDir, "logs", "internal-error.log")
		if werr := os.WriteFile(log, []byte(fmt.Sprintf("%v\n\n%s", err, ierr.Stack)), 0o600); werr != nil {
			log = "(not written: " + werr.Error() + ")"
		}
		fmt.Fprintf(w, "error: %v\n", err)
		fmt.Fprintf(w, "This is a bug in kubeforge: please report it with %s and the host logs beside it.\n", log)
		fmt.Fprintf(w, "The other hosts finished the step; nothing was rolled back. Running the same command again is safe.\n")
		return 3
	}
	var verr *inventory.ValidationError
	if errors.As(err, &verr) {
		fmt.Fprintf(w, "error: %s is invalid:\n", g.opts.Inventory)
		fmt.Fprintln(w, indent(verr.Error(), "  "))
		fmt.Fprintln(w, "Nothing was changed on any host.")
		return 2
	}
	if failed := preflightFailures(err); len(failed) > 0 {
		fmt.Fprintf(w, "error: preflight failed; nothing was changed on any host.\n")
		tasks.WritePreflightTable(w, failed, true)
		fmt.Fprintf(w, "Fix the hosts above and run the command again, or skip a check with --ignore-preflight-errors=ID.\n")
		return 1
	}
	var hostErrs []*playbooks.HostError
	collectHostErrors(err, &hostErrs)
	if len(hostErrs) == 0 {
		fmt.Fprintf(w, "error: %v\n", err)
		if hint := hintFor(err); hint != "" {
			fmt.Fprintln(w, hint)
		}
		return exitFor(err)
	}
	fmt.Fprintf(w, "error: step %s failed on %d host(s):\n", hostErrs[0].Step, len(hostErrs))
	for _, he := range hostErrs {
		fmt.Fprintf(w, "\n  host %s:\n", he.Host)
		var re *ssh.RunError
		if errors.As(he.Err, &re) {
			fmt.Fprintf(w, "    %v\n", trimRun(he.Err, re))
			fmt.Fprintf(w, "    command:   %s\n", oneLine(re.Cmd, 300))
			fmt.Fprintf(w, "    exit code: %d\n", re.ExitCode)
			if s := strings.TrimSpace(re.Stderr); s != "" {
				fmt.Fprintf(w, "    stderr:\n%s\n", indent(lastLines(s, 15), "      | "))
			} else if s := strings.TrimSpace(re.Stdout); s != "" {
				fmt.Fprintf(w, "    output:\n%s\n", indent(lastLines(s, 15), "      | "))
			}
		} else {
			fmt.Fprintln(w, indent(he.Err.Error(), "    "))
		}
		if hint := hintFor(he.Err); hint != "" {
			fmt.Fprintf(w, "    %s\n", hint)
		}
	}
	fmt.Fprintf(w, "\nThe full log of each host is in %s/logs/<host>.log.\n", g.opts.StateDir)
	fmt.Fprintf(w, "Nothing was rolled back. Fix the cause and run the same command again: finished steps are skipped.\n")
	return 1
}

// preflightFailures gathers the failed checks of every preflight error in
// err (the plan's disk checks fail per host, joined).
func preflightFailures(err error) []tasks.CheckResult {
	var perr *tasks.PreflightError
	if errors.As(err, &perr) && perr == err {
		return perr.Failed
	}
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		var out []tasks.CheckResult
		for _, e := range j.Unwrap() {
			out = append(out, preflightFailures(e)...)
		}
		return out
	}
	if u := errors.Unwrap(err); u != nil {
		return preflightFailures(u)
	}
	return nil
}

func collectHostErrors(err error, out *[]*playbooks.HostError) {
	var he *playbooks.HostError
	if errors.As(err, &he) && he == err {
		*out = append(*out, he)
		return
	}
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		for _, e := range j.Unwrap() {
			collectHostErrors(e, out)
		}
		return
	}
	if u := errors.Unwrap(err); u != nil {
		collectHostErrors(u, out)
	}
}

func hintFor(err error) string {
	var purge *playbooks.PurgeError
	if errors.As(err, &purge) {
		return "Nothing was reset and nothing was removed."
	}
	var sd *playbooks.StateDirError
	if errors.As(err, &sd) {
		return "Nothing was changed on any host or in that directory."
	}
	var hk *ssh.HostKeyError
	if errors.As(err, &hk) {
		if hk.Changed {
			return "The host key CHANGED: this may be an attack. If the host was reinstalled, remove its old line from known_hosts."
		}
		return "Check the fingerprint out of band, then re-run with --accept-new-host-keys to record it."
	}
	var ae *ssh.AuthError
	if errors.As(err, &ae) {
		return "Check ssh.user and ssh.identityFiles in the inventory, or load the key into ssh-agent."
	}
	return ""
}

func exitFor(err error) int {
	var purge *playbooks.PurgeError
	var read *inventory.ReadError
	var sd *playbooks.StateDirError
	if errors.As(err, &purge) || errors.As(err, &read) || errors.As(err, &sd) {
		return 2
	}
	if strings.HasPrefix(err.Error(), "unknown step") || strings.Contains(err.Error(), "no inventory") {
		return 2
	}
	return 1
}

// trimRun drops the RunError's own text (printed below) from the chain's message.
func trimRun(err error, re *ssh.RunError) string {
	s := err.Error()
	if i := strings.Index(s, re.Error()); i > 0 {
		return strings.TrimSuffix(strings.TrimSpace(s[:i]), ":")
	}
	return s
}

func indent(s, prefix string) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	for i, l := range lines {
		lines[i] = prefix + l
	}
	return strings.Join(lines, "\n")
}

func lastLines(s string, n int) string {
	lines := strings.Split(s, "\n")
	if len(lines) > n {
		lines = append([]string{fmt.Sprintf("... (%d earlier lines in the host log)", len(lines)-n)}, lines[len(lines)-n:]...)
	}
	return strings.Join(lines, "\n")
}

func oneLine(s string, n int) string {
	s = strings.Join(strings.Fields(s), " ")
	if len(s) > n {
		return s[:n] + " ..."
	}
	return s
}

func tasksWritePreflight(w io.Writer, res *playbooks.RunResult) {
	tasks.WritePreflightTable(w, res.Env.PreflightResults(), false)
}
