package main

import (
	"bytes"
	"net/netip"
	"os"
	"regexp"
	"strings"
	"testing"

	"github.com/kubeforge/kubeforge/ssh"
)

func TestReplaceTokensReplacesWholeTokensOnly(t *testing.T) {
	pairs := [][2]string{{"10.0.0.1", "{{ip}}"}, {"node1", "{{name}}"}}
	for _, tc := range []struct{ in, want string }{
		{"ip\t10.0.0.1/24", "ip\t{{ip}}/24"},
		{"10.0.0.12 and 10.0.0.1", "10.0.0.12 and {{ip}}"},
		{"</dev/tcp/10.0.0.1/6443", "</dev/tcp/{{ip}}/6443"},
		{"node10 node1,node1", "node10 {{name}},{{name}}"},
		{"mynode1", "mynode1"},
	} {
		if got := replaceTokens(tc.in, pairs); got != tc.want {
			t.Errorf("replaceTokens(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}

func TestTemplateHidesTheRecordedIdentity(t *testing.T) {
	facts := "hostname\tnode1\nmachineid\tabc123\nproductuuid\t\nmac\teth0 02:42:ac:1f:e3:0b\nip\t127.0.0.1/8\nip\t172.31.227.11/24\nclock\t1764000000.123456789\n"
	hosts := []RecordedHost{{Role: "control-plane", Exchanges: []Exchange{
		{Cmd: "sh -c 'facts'", Stdout: facts},
		{Cmd: "sh -c 'ping 172.31.227.11'", Stdout: "node1 at 172.31.227.11"},
	}}}
	id, ok := factsIdentity(facts)
	if !ok {
		t.Fatal("no identity in the facts")
	}
	id.Name, id.IP = "node1", "172.31.227.11"
	template(hosts, []identity{id})
	got := hosts[0].Exchanges
	for _, real := range []string{"node1", "abc123", "02:42:ac:1f:e3:0b", "172.31.227.11", "1764000000"} {
		for _, e := range got {
			if strings.Contains(e.Cmd+e.Stdout, real) {
				t.Errorf("%q is still in %q / %q", real, e.Cmd, e.Stdout)
			}
		}
	}
	want := "hostname\t{{h0.name}}\nmachineid\t{{h0.machine_id}}\nproductuuid\t\nmac\teth0 {{h0.mac0}}\nip\t127.0.0.1/8\nip\t{{h0.ip}}/24\nclock\t{{clock}}\n"
	if got[0].Stdout != want {
		t.Errorf("templated facts:\n%s\nwant:\n%s", got[0].Stdout, want)
	}
}

func TestNormalisationMatchesSudoNoncesAndDigests(t *testing.T) {
	sum := strings.Repeat("ab", 32)
	rec := &Recording{Hosts: []RecordedHost{{Role: "worker", Exchanges: []Exchange{
		{Cmd: "sh -c 'uname -a'", Stdout: "Linux"},
		{Cmd: "sh -c 'sync -- /opt/.f.kubeforge-0123456789ab; record /opt/f " + sum + " ours'", Stdout: "synced"},
	}}}}
	r := newReplay(rec)
	w := r.templateFor("worker")
	for _, tc := range []struct{ cmd, kind, stdout string }{
		{"sh -c 'uname -a'", matchExact, "Linux"},
		{"sudo -n -- sh -c 'uname -a'", matchNormalised, "Linux"},
		{"sudo -n -- sh -c 'sync -- /opt/.f.kubeforge-ba9876543210; record /opt/f " + strings.Repeat("cd", 32) + " ours'", matchNormalised, "synced"},
		{"sh -c 'uname -r'", matchNone, ""},
	} {
		x, kind := r.lookup(w, tc.cmd)
		if kind != tc.kind || (x != nil && x.Stdout != tc.stdout) {
			t.Errorf("lookup(%q) = %v %q, want %q %q", tc.cmd, x, kind, tc.kind, tc.stdout)
		}
	}
}

func TestUnwrapShellUndoesKubeforgesQuoting(t *testing.T) {
	script := "echo 'a' \"$?\"\nwait"
	for _, cmd := range []string{"sh -c " + ssh.Quote(script), "sudo -n -- sh -c " + ssh.Quote(script)} {
		if got := unwrapShell(cmd); got != script {
			t.Errorf("unwrapShell(%q) = %q", cmd, got)
		}
	}
}

// The network model must answer kubeforge's reachability scripts as real hosts did: the recording
// holds them (a control plane and a worker probing each other), and the model, given a fleet at the
// recorded hosts' places, must print the same.
func TestNetworkModelAgreesWithTheRecording(t *testing.T) {
	rec := testRecording(t)
	f := &Fleet{byIP: map[string]*Endpoint{}, replay: newReplay(rec)}
	var eps []*Endpoint
	for i, h := range f.replay.hosts {
		ip := netip.AddrFrom4([4]byte{127, 9, 0, byte(i + 1)})
		e := &Endpoint{Index: i, Name: "rec" + string(rune('a'+i)), IP: ip, Role: h.role, tmpl: h, held: map[int]bool{}}
		e.setIdentity()
		f.byIP[ip.String()] = e
		eps = append(eps, e)
	}
	// Every recorded host's placeholders, filled with the endpoint standing in for it.
	var pairs []string
	for i, e := range eps {
		for _, p := range []string{"ip", "name"} {
			v := e.IP.String()
			if p == "name" {
				v = e.Name
			}
			pairs = append(pairs, "{{h"+string(rune('0'+i))+"."+p+"}}", v)
		}
	}
	fill := strings.NewReplacer(pairs...)
	order := regexp.MustCompile(`(?m)^[0-9]+ [0-9]+$`)
	checked := 0
	// Replay the hosts' network scripts in the order of a run: preflight/host's probe of the endpoint,
	// then preflight/cluster's holds, peer probes and stops, each on every host before the next.
	phases := []func(string) bool{
		func(s string) bool { return strings.HasPrefix(s, "timeout ") && strings.Contains(s, "/dev/tcp/") },
		func(s string) bool { return strings.Contains(s, "systemd-run") },
		func(s string) bool { return strings.HasPrefix(s, "( timeout ") },
		func(s string) bool { return strings.HasPrefix(s, "systemctl stop ") },
	}
	for _, phase := range phases {
		for i, h := range rec.Hosts {
			for _, x := range h.Exchanges {
				script := unwrapShell(fill.Replace(x.Cmd))
				if !phase(script) {
					continue
				}
				got, ok := f.model(eps[i], script)
				if !ok {
					t.Errorf("the model does not answer %q", script)
					continue
				}
				want := fill.Replace(x.Stdout)
				if order.MatchString(want) { // background probes answer in any order
					want, got = sortLines(want), sortLines(got)
				}
				if got != want {
					t.Errorf("model answer to\n%s\n= %q, the host said %q", script, got, want)
				}
				checked++
			}
		}
	}
	if checked < 4 {
		t.Errorf("only %d network scripts in the recording; want holds, probes and stops from a control plane and a worker", checked)
	}
}

func sortLines(s string) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	for a := 1; a < len(lines); a++ {
		for b := a; b > 0 && lines[b] < lines[b-1]; b-- {
			lines[b], lines[b-1] = lines[b-1], lines[b]
		}
	}
	return strings.Join(lines, "\n") + "\n"
}

// The recording is committed; it must hold no secret. kubeforge's facts read no key (only the
// subject of the kubelet's certificate), and preflight reads nothing else.
func TestRecordingHoldsNoSecret(t *testing.T) {
	b, err := os.ReadFile("testdata/recording.json")
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(b, []byte("PRIVATE KEY")) {
		t.Error("the recording holds a private key")
	}
	rec := testRecording(t)
	if !strings.Contains(rec.Note, "SIMULATED") {
		t.Errorf("the recording's note does not say it is for a simulation: %q", rec.Note)
	}
	for i, h := range rec.Hosts {
		for _, x := range h.Exchanges {
			answer := strings.ToLower(x.Stdout + x.Stderr)
			for _, s := range []string{"begin certificate", "kubeletcert\t", "token", "password", "secret"} {
				if strings.Contains(answer, s) {
					t.Errorf("host %d: the answer to %q holds %q", i, shorten(x.Cmd, 80), s)
				}
			}
			if x.StdinBytes > 0 {
				t.Errorf("host %d: %q had stdin (not recorded, so it cannot be replayed faithfully)", i, shorten(x.Cmd, 80))
			}
		}
	}
}

func testRecording(t *testing.T) *Recording {
	t.Helper()
	rec, err := loadRecording("testdata/recording.json")
	if err != nil {
		t.Fatal(err)
	}
	return rec
}
