package main

import (
	"bytes"
	"io"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"testing"

	"github.com/pkg/sftp"
	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/knownhosts"
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
