package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/kubeforge/kubeforge/playbooks"
	"github.com/kubeforge/kubeforge/tasks"
)

// startFleet serves a simulated fleet for the test and returns it with its inventory.
func startFleet(t *testing.T, o Options) (*Fleet, string) {
	t.Helper()
	dir := t.TempDir()
	key := filepath.Join(dir, "id_ed25519")
	signer, err := clientKey(key)
	if err != nil {
		t.Fatal(err)
	}
	if err := raiseNoFile(uint64(6*o.N + 256)); err != nil { // the fleet's and kubeforge's sockets, kubeforge's logs
		t.Fatal(err)
	}
	o.ClientKey, o.Recording, o.Port = signer.PublicKey(), testRecording(t), 0
	if o.User == "" {
		o.User = "root"
	}
	f, err := NewFleet(o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(f.Close)
	if err := f.writeFiles(dir, key, ""); err != nil {
		t.Fatal(err)
	}
	f.Serve()
	return f, filepath.Join(dir, "inventory.yaml")
}

type event struct {
	Type, Step, Host, Result, Error string
}

// preflight runs `kubeforge preflight` (connect, facts, preflight) in-process, as cmd/kubeforge
// does, with the command line's default concurrency, and returns its JSON events.
func preflight(t *testing.T, inv string) ([]event, *playbooks.RunResult, error) {
	t.Helper()
	var out, stderr bytes.Buffer
	opts := &playbooks.Options{Inventory: inv, Concurrency: 20, Output: "json", Stdout: &out, Stderr: &stderr,
		Tasks: tasks.Options{IgnorePreflight: map[string]bool{}}}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	res, err := playbooks.Run(ctx, opts, playbooks.Preflight)
	var events []event
	sc := bufio.NewScanner(&out)
	for sc.Scan() {
		var e event
		if json.Unmarshal(sc.Bytes(), &e) == nil {
			events = append(events, e)
		}
	}
	if stderr.Len() > 0 {
		t.Logf("kubeforge's stderr: %s", stderr.String())
	}
	return events, res, err
}

// fleetProblems says, per endpoint, what differs from a clean run: connected exactly once with one
// handshake, nothing refused, lost or rejected, every command recorded, and every host step ended ok
// on it (and the cluster-wide step, under ""), from kubeforge's own events.
func fleetProblems(f *Fleet, events []event) map[string][]string {
	problems := map[string][]string{}
	add := func(host, format string, args ...any) {
		problems[host] = append(problems[host], fmt.Sprintf(format, args...))
	}
	ended := map[string]map[string][]string{} // step -> host -> results
	stepOK := map[string]bool{}
	for _, e := range events {
		switch e.Type {
		case "host-end":
			if ended[e.Step] == nil {
				ended[e.Step] = map[string][]string{}
			}
			ended[e.Step][e.Host] = append(ended[e.Step][e.Host], e.Result+" "+e.Error)
		case "step-end":
			stepOK[e.Step] = e.Result == "ok"
		}
	}
	for _, e := range f.Endpoints {
		s := e.snapshot()
		if s.Conns != 1 || s.Handshakes != 1 {
			add(e.Name, "%d connections, %d handshakes (want 1 and 1)", s.Conns, s.Handshakes)
		}
		if s.Refused+s.Failed+s.AuthRejected > 0 {
			add(e.Name, "%d refused, %d lost or failed handshakes, %d keys rejected", s.Refused, s.Failed, s.AuthRejected)
		}
		if s.Unrecorded > 0 {
			add(e.Name, "%d unrecorded commands: %q", s.Unrecorded, s.Samples)
		}
		if s.OverArgMax > 0 {
			add(e.Name, "%d commands too long for a real sshd (longest %d bytes)", s.OverArgMax, s.MaxCmdBytes)
		}
		for _, step := range []string{"connect", "facts", "preflight/host"} {
			if r := ended[step][e.Name]; len(r) != 1 || (r[0] != "ok " && r[0] != "changed ") {
				add(e.Name, "step %s ended %q (want once, ok)", step, r)
			}
		}
	}
	if !stepOK["preflight/cluster"] {
		add("", "step preflight/cluster did not end ok")
	}
	return problems
}

// TestPreflightOnASimulatedFleet runs kubeforge's connect + facts + preflight against 200 simulated
// hosts (3 control planes) and checks the whole run from both ends.
func TestPreflightOnASimulatedFleet(t *testing.T) {
	const n = 200
	f, inv := startFleet(t, Options{N: n, ControlPlanes: 3, Base: netip.MustParseAddr("127.7.0.1")})
	start := time.Now()
	events, res, err := preflight(t, inv)
	t.Logf("preflight of %d simulated hosts: %s", n, time.Since(start).Round(time.Millisecond))
	if err != nil {
		t.Errorf("preflight failed: %v", err)
	}
	for host, ps := range fleetProblems(f, events) {
		t.Errorf("%s: %s", host, strings.Join(ps, "; "))
	}
	if res == nil || res.Env == nil {
		t.Fatal("no run result")
	}
	// The identities the simulator substitutes must pass kubeforge's uniqueness checks, and the
	// network model its peer probes: every host has passed each of these.
	passed := map[string]map[string]bool{}
	peer := 0
	for _, r := range res.Env.PreflightResults() {
		if passed[r.Host] == nil {
			passed[r.Host] = map[string]bool{}
		}
		if r.Passed {
			passed[r.Host][r.ID] = true
		} else if r.Severity == tasks.SeverityError {
			t.Errorf("%s: check %s failed: %s", r.Host, r.ID, r.Message)
		}
		if r.ID == "PeerPort" {
			peer++
		}
	}
	for _, e := range f.Endpoints {
		for _, id := range []string{"MachineID", "MAC", "HostnameUnique", "ClockSkew", "Reach", "PeerPort"} {
			if !passed[e.Name][id] {
				t.Errorf("%s: no passed %s check", e.Name, id)
			}
		}
	}
	// Every other host probes each control plane's API server, each control plane every other kubelet,
	// and the control planes each other's etcd client and peer ports.
	if want := 3*(n-1) + 3*(n-1) + 3*2*2; peer != want {
		t.Errorf("%d peer-port checks, want %d", peer, want)
	}
	sum := f.Summary().Total
	t.Logf("fleet: %d commands (%d exact, %d normalised, %d modelled), %d unrecorded, the longest %d bytes",
		sum.Commands, sum.Exact, sum.Normalised, sum.Modelled, sum.Unrecorded, sum.MaxCmdBytes)
}

// The checks must see an endpoint that refuses: kubeforge's connect fails on it alone, and the
// simulator counts its refusals (kubeforge retries a refused dial).
func TestPreflightSeesARefusingEndpoint(t *testing.T) {
	f, inv := startFleet(t, Options{N: 12, ControlPlanes: 1, Base: netip.MustParseAddr("127.7.8.1"), Refuse: map[int]bool{6: true}})
	events, _, err := preflight(t, inv)
	var he *playbooks.HostError
	if !errors.As(err, &he) || he.Step != "connect" || he.Host != "sim0007" {
		t.Errorf("preflight returned %v; want a connect failure on sim0007", err)
	}
	problems := fleetProblems(f, events)
	got := strings.Join(problems["sim0007"], "; ")
	for _, want := range []string{"handshakes (want 1 and 1)", "refused", "step connect ended"} {
		if !strings.Contains(got, want) {
			t.Errorf("sim0007's problems %q do not say %q", got, want)
		}
	}
	for _, e := range f.Endpoints {
		s := e.snapshot()
		if e.Name != "sim0007" && (s.Conns != 1 || s.Refused > 0 || s.Failed > 0) {
			t.Errorf("%s: %d connections, %d refused, %d failed; want 1, 0, 0", e.Name, s.Conns, s.Refused, s.Failed)
		}
	}
	if f.Endpoints[6].snapshot().Refused < 2 {
		t.Errorf("sim0007 refused %d connections; kubeforge retries a refused dial", f.Endpoints[6].snapshot().Refused)
	}
}

// A sudo user gets every command wrapped in `sudo -n -- ` and its sudo checked first: the recording
// (made as root and as the harness's sudo user) must answer that too.
func TestPreflightAsASudoUser(t *testing.T) {
	f, inv := startFleet(t, Options{N: 10, ControlPlanes: 1, Base: netip.MustParseAddr("127.7.9.1"), User: "kube"})
	events, _, err := preflight(t, inv)
	if err != nil {
		t.Errorf("preflight as kube failed: %v", err)
	}
	for host, ps := range fleetProblems(f, events) {
		t.Errorf("%s: %s", host, strings.Join(ps, "; "))
	}
}

func TestUnrecordedCommandsAreCountedAndAnswered127(t *testing.T) {
	f, _ := startFleet(t, Options{N: 1, ControlPlanes: 1, Base: netip.MustParseAddr("127.7.10.1")})
	e := f.Endpoints[0]
	c := dialEndpoint(t, f, e)
	sess, err := c.NewSession()
	if err != nil {
		t.Fatal(err)
	}
	var stderr bytes.Buffer
	sess.Stderr = &stderr
	err = sess.Run("sh -c 'rm -rf /'")
	var ee interface{ ExitStatus() int }
	if !errors.As(err, &ee) || ee.ExitStatus() != 127 || !strings.Contains(stderr.String(), "fleetsim: unrecorded command") {
		t.Errorf("unrecorded command: err %v, stderr %q; want exit 127 and fleetsim's message", err, stderr.String())
	}
	if s := e.snapshot(); s.Unrecorded != 1 || !slices.Contains(s.Samples, "sh -c 'rm -rf /'") {
		t.Errorf("stats: %d unrecorded, samples %q", s.Unrecorded, s.Samples)
	}
}

// A command too long for one argument fails as it would on a real sshd, whatever was recorded.
func TestCommandsTooLongForSSHDFailAsThere(t *testing.T) {
	f, _ := startFleet(t, Options{N: 1, ControlPlanes: 1, Base: netip.MustParseAddr("127.7.12.1")})
	e := f.Endpoints[0]
	sess, err := dialEndpoint(t, f, e).NewSession()
	if err != nil {
		t.Fatal(err)
	}
	var stderr bytes.Buffer
	sess.Stderr = &stderr
	err = sess.Run("sh -c 'true " + strings.Repeat("x", maxArgStrlen) + "'")
	var ee interface{ ExitStatus() int }
	if !errors.As(err, &ee) || ee.ExitStatus() != 1 || !strings.Contains(stderr.String(), "Argument list too long") {
		t.Errorf("a %d-byte command: err %v, stderr %q; want exit 1, Argument list too long", maxArgStrlen, err, stderr.String())
	}
	if s := e.snapshot(); s.OverArgMax != 1 || s.Unrecorded != 0 {
		t.Errorf("stats: %d over the limit, %d unrecorded; want 1, 0", s.OverArgMax, s.Unrecorded)
	}
}
