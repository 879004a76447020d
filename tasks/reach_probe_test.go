package tasks

import (
	"net"
	"os/exec"
	"strings"
	"testing"

	"github.com/kubeforge/kubeforge/inventory"
)

// TestProbeScriptTellsOpenFromRefused runs the probe script in bash against
// a port that listens and one that does not, on loopback: 0 and 1, once each.
func TestProbeScriptTellsOpenFromRefused(t *testing.T) {
	if _, err := exec.LookPath("bash"); err != nil {
		t.Skip("no bash")
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	closed, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closedPort := closed.Addr().(*net.TCPAddr).Port
	closed.Close()
	to := &Host{Host: &inventory.Host{Name: "peer", Address: "127.0.0.1"}}
	pps := []peerPort{{to: to, port: l.Addr().(*net.TCPAddr).Port}, {to: to, port: closedPort}}
	out, err := exec.Command("bash", "-c", probeScript(pps)).Output()
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]string{}
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		i, code, _ := strings.Cut(line, " ")
		if _, dup := got[i]; dup {
			t.Errorf("probe %s reported twice", i)
		}
		got[i] = code
	}
	if got["0"] != "0" || got["1"] != "1" || len(got) != 2 {
		t.Errorf("probe results %v; want 0 open and 1 refused (ports %d, %d)", got, pps[0].port, pps[1].port)
	}
}
