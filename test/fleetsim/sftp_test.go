package main

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"testing"

	"github.com/pkg/sftp"
	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/knownhosts"

	"github.com/kubeforge/kubeforge/inventory"
	"github.com/kubeforge/kubeforge/playbooks"
	kfssh "github.com/kubeforge/kubeforge/ssh"
	"github.com/kubeforge/kubeforge/tasks"
)

// dialEndpoint connects to e as the fleet's user with the fleet's key, checking the host key
// against the known_hosts file the fleet wrote.
func dialEndpoint(t *testing.T, f *Fleet, e *Endpoint) *ssh.Client {
	t.Helper()
	dir := f.dir
	b, err := os.ReadFile(filepath.Join(dir, "id_ed25519"))
	if err != nil {
		t.Fatal(err)
	}
	signer, err := ssh.ParsePrivateKey(b)
	if err != nil {
		t.Fatal(err)
	}
	known, err := knownhosts.New(filepath.Join(dir, "known_hosts"))
	if err != nil {
		t.Fatal(err)
	}
	c, err := ssh.Dial("tcp", net.JoinHostPort(e.IP.String(), strconv.Itoa(e.Port)), &ssh.ClientConfig{
		User: f.opts.User, Auth: []ssh.AuthMethod{ssh.PublicKeys(signer)}, HostKeyCallback: known})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func TestSFTPUploadsAreCountedAndKeptWhenAsked(t *testing.T) {
	payload := bytes.Repeat([]byte("fleetsim"), 300_000) // 2.4 MB: several pipelined writes
	for _, keep := range []bool{false, true} {
		f, _ := startFleet(t, Options{N: 2, ControlPlanes: 1, Base: netip.MustParseAddr("127.7.11.1"), KeepUploads: keep})
		e := f.Endpoints[1]
		sc, err := sftp.NewClient(dialEndpoint(t, f, e), sftp.UseConcurrentWrites(true))
		if err != nil {
			t.Fatal(err)
		}
		w, err := sc.OpenFile("/opt/x/.a.bin.tmp", os.O_WRONLY|os.O_CREATE|os.O_EXCL)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := w.ReadFrom(bytes.NewReader(payload)); err != nil {
			t.Fatal(err)
		}
		if err := w.Chmod(0o644); err != nil {
			t.Fatal(err)
		}
		if err := w.Close(); err != nil {
			t.Fatal(err)
		}
		if err := sc.PosixRename("/opt/x/.a.bin.tmp", "/opt/x/a.bin"); err != nil {
			t.Fatal(err)
		}
		s := e.snapshot()
		if s.SFTPSessions != 1 || s.SFTPFiles != 1 || s.SFTPBytes != int64(len(payload)) {
			t.Errorf("keep=%v: %d sessions, %d files, %d bytes; want 1, 1, %d", keep, s.SFTPSessions, s.SFTPFiles, s.SFTPBytes, len(payload))
		}
		r, err := sc.Open("/opt/x/a.bin")
		if !keep {
			if err == nil {
				t.Error("a discarded upload can be read back")
			}
			sc.Close()
			continue
		}
		if err != nil {
			t.Fatal(err)
		}
		got, err := io.ReadAll(r)
		if err != nil || !bytes.Equal(got, payload) {
			t.Errorf("kept upload read back: %d bytes, err %v; want the %d bytes sent", len(got), err, len(payload))
		}
		sc.Close()
	}
}

// An upload step, as test/bench/fanout's (recorded): kubeforge's runner, tasks.Connect, tasks.GatherFacts and
// ssh.Client.Upload of the recorded paths and modes, with other content (the digests differ: normalised), as root
// and as the sudo user (staging directory, temp names: normalised). Every byte must arrive over SFTP.
func TestUploadStepOnASimulatedFleet(t *testing.T) {
	payload := bytes.Repeat([]byte{0xfe, 0x5e}, 1<<20) // 2 MiB: through the sums cache, as recorded
	files := []kfssh.File{{Path: "/opt/bench/payload.bin", Mode: 0o755, Data: payload},
		{Path: "/opt/bench/small1.conf", Mode: 0o644, Data: []byte("one\n")}, {Path: "/opt/bench/small2.conf", Mode: 0o600, Data: []byte("two\n")}}
	size := int64(len(payload) + 8)
	for i, user := range []string{"root", "kube"} {
		t.Run(user, func(t *testing.T) {
			f, invPath := startFleet(t, Options{N: 10, ControlPlanes: 1, Base: netip.AddrFrom4([4]byte{127, 7, byte(13 + i), 1}), User: user})
			inv, err := inventory.Load(invPath)
			if err != nil {
				t.Fatal(err)
			}
			env := tasks.NewEnv(inv, filepath.Join(f.dir, "state"), slog.New(slog.DiscardHandler), tasks.Options{})
			defer env.Close()
			var mu sync.Mutex
			changed := 0
			upload := func(ctx context.Context, env *tasks.Env, h *tasks.Host) error {
				paths, err := h.Client.Upload(ctx, files)
				mu.Lock()
				defer mu.Unlock()
				changed += len(paths)
				return err
			}
			pb := playbooks.Playbook{Name: "upload", Steps: []playbooks.Step{
				{Name: "connect", Hosts: inventory.SelectAll, Run: tasks.Connect},
				{Name: "facts", Hosts: inventory.SelectAll, Run: tasks.GatherFacts},
				{Name: "upload", Hosts: inventory.SelectAll, Run: upload},
			}}
			if err := (&playbooks.Runner{Concurrency: 20}).Run(context.Background(), env, pb); err != nil {
				t.Fatalf("upload step: %v", err)
			}
			if changed != 3*len(f.Endpoints) {
				t.Errorf("%d files changed, want %d", changed, 3*len(f.Endpoints))
			}
			for _, e := range f.Endpoints {
				if s := e.snapshot(); s.SFTPFiles != 3 || s.SFTPBytes != size || s.Unrecorded > 0 || s.Normalised == 0 {
					t.Errorf("%s: %d files, %d bytes over SFTP, %d unrecorded, %d normalised commands (%q); want 3, %d, 0, some",
						e.Name, s.SFTPFiles, s.SFTPBytes, s.Unrecorded, s.Normalised, s.Samples, size)
				}
			}
		})
	}
}
