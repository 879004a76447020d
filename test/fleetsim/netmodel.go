package main

import (
	"fmt"
	"net"
	"regexp"
	"strconv"
	"strings"
)

// The simulated network. kubeforge's preflight tests, from each host, the TCP ports the hosts need on
// each other (tasks/reach.go): it holds a port open with a transient systemd unit where nothing
// listens yet, probes it with bash's /dev/tcp from the peers, then stops the units. Those answers depend
// on the fleet, not on one host, so the simulator computes them instead of replaying them:
//
//   - a hold script (`systemd-run ... --unit kubeforge-reach-P ... -l ADDR:P`) marks P held on the
//     endpoint when ADDR is the endpoint's own address, and prints "bound <hex port>" for it, as
//     the script's check of /proc/net/tcp does on a host;
//   - `systemctl stop kubeforge-reach-P ...` releases them;
//   - a probe line (`timeout 3 bash -c '</dev/tcp/ADDR/P' ...; echo "PREFIX $r"`, retried on a timeout) prints PREFIX and 0
//     (open) when ADDR is an endpoint on which P is held or was listening in the recording, 1 (refused)
//     when ADDR is an endpoint without it, and 124 (timed out) for an address that is no endpoint.

var (
	probeRe = regexp.MustCompile(`timeout [0-9]+ bash -c '</dev/tcp/([^/']+)/([0-9]+)'[^;]*;[^"]*?echo "([^"$]*)\$(?:\?|r)"`)
	holdRe  = regexp.MustCompile(`systemd-run .*--unit kubeforge-reach-([0-9]+) .*systemd-socket-activate -l (\S+)`)
	stopRe  = regexp.MustCompile(`^systemctl stop((?: kubeforge-reach-[0-9]+)+)$`)
	syncRe  = regexp.MustCompile(`^sync -- '[^']*'$`)
)

// unwrapShell returns the script kubeforge passed to `sh -c`, with or without `sudo -n -- ` in front
// (ssh.Client.run quotes it with ssh.Quote), or cmd itself when it is not wrapped.
func unwrapShell(cmd string) string {
	s := strings.TrimPrefix(cmd, "sudo -n -- ")
	q, ok := strings.CutPrefix(s, "sh -c '")
	if !ok || !strings.HasSuffix(q, "'") {
		return cmd
	}
	return strings.ReplaceAll(q[:len(q)-1], `'\''`, `'`)
}

// model answers the commands about the simulated network (and the SFTP server's missing fsync),
// or reports ok=false for any other command.
func (f *Fleet) model(e *Endpoint, script string) (stdout string, ok bool) {
	if strings.Contains(script, "kubeforge-reach-") && strings.Contains(script, "systemd-run") {
		var out strings.Builder
		for _, m := range holdRe.FindAllStringSubmatch(script, -1) {
			port, _ := strconv.Atoi(m[1])
			host, _, err := net.SplitHostPort(m[2])
			if err != nil || host != e.IP.String() {
				continue // a host cannot bind another's address
			}
			e.mu.Lock()
			e.held[port] = true
			e.mu.Unlock()
			fmt.Fprintf(&out, "bound %04X\n", port)
		}
		return out.String(), true
	}
	if m := stopRe.FindStringSubmatch(script); m != nil {
		e.mu.Lock()
		for _, u := range strings.Fields(m[1]) {
			port, _ := strconv.Atoi(strings.TrimPrefix(u, "kubeforge-reach-"))
			delete(e.held, port)
		}
		e.mu.Unlock()
		return "", true
	}
	if probes := probeRe.FindAllStringSubmatch(script, -1); probes != nil {
		var out strings.Builder
		for _, m := range probes {
			port, _ := strconv.Atoi(m[2])
			fmt.Fprintf(&out, "%s%s\n", m[3], f.probe(m[1], port))
		}
		return out.String(), true
	}
	if syncRe.MatchString(script) {
		// pkg/sftp's server has no fsync@openssh.com, so kubeforge syncs the temp file by command.
		return "", true
	}
	return "", false
}

// probe is the exit status of bash's /dev/tcp test of addr:port in the simulated network.
func (f *Fleet) probe(addr string, port int) string {
	t := f.byIP[addr]
	if t == nil {
		return "124"
	}
	t.mu.Lock()
	held := t.held[port]
	t.mu.Unlock()
	if held || t.tmpl.listening[port] {
		return "0"
	}
	return "1"
}
