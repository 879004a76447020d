//go:build integration

package ssh

import (
	"bufio"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
	"unsafe"
)

// watchEnv names the directory the watcher process watches.
const watchEnv = "KUBEFORGE_TEST_WATCH_DIR"

// TestIntegrationUploadedKeysAreNeverOpenToOthers: an unprivileged local
// user watching a directory anyone may read (inotify, opening every file the
// moment it appears) never opens a key kubeforge writes there: uploaded as
// root over SFTP, uploaded through sudo install, or copied on the host.
func TestIntegrationUploadedKeysAreNeverOpenToOthers(t *testing.T) {
	e := setup(t)
	srv := startSSHD(t, e, "watched", false)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	dir, binDir := t.TempDir(), t.TempDir()
	for _, d := range []string{dir, binDir} {
		if err := os.Chmod(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	watcher := startWatcher(t, binDir, dir)

	p := NewPool(Limits{})
	defer p.Close()
	root, err := p.Dial(ctx, srv.config("root-up", "root", e.rootKey))
	if err != nil {
		t.Fatal(err)
	}
	sudo, err := p.Dial(ctx, srv.config("sudo-up", userSudo, e.sudoKey))
	if err != nil {
		t.Fatal(err)
	}
	key := func() []byte {
		b := make([]byte, 32)
		rand.Read(b)
		return []byte("-----BEGIN PRIVATE KEY-----\n" + hex.EncodeToString(b) + "\n")
	}
	// 50 keys written each way, five to a call (each call costs a few commands on a busy machine).
	const rounds, perCall = 10, 5
	for i := range rounds {
		for _, c := range []*Client{root, sudo} {
			var files []File
			for j := range perCall {
				files = append(files, File{Path: filepath.Join(dir, fmt.Sprintf("%s-%d.key", c.User(), j)), Mode: 0o600, Data: key()})
			}
			if changed, err := c.Upload(ctx, files); err != nil || len(changed) != perCall {
				t.Fatalf("upload %d as %s: %v %v", i, c.User(), changed, err)
			}
		}
		var copies []Copy
		for j := range perCall {
			from := filepath.Join(dir, fmt.Sprintf("root-%d.key", j))
			sum := sha256.Sum256(readBytes(t, from))
			copies = append(copies, Copy{From: from, To: filepath.Join(dir, fmt.Sprintf("copy-%d.key", j)), Mode: 0o600, SHA256: hex.EncodeToString(sum[:])})
		}
		if _, err := root.CopyFiles(ctx, copies, false); err != nil {
			t.Fatalf("copy %d: %v", i, err)
		}
	}
	opened, events := watcher()
	if events < 3*rounds*perCall {
		t.Fatalf("the watcher saw %d files appear, want at least %d: it did not watch", events, 3*rounds*perCall)
	}
	if len(opened) > 0 {
		t.Fatalf("an unprivileged user opened %d of the files as they were written, e.g. %s", len(opened), opened[0])
	}
}

func readBytes(t *testing.T, p string) []byte {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// startWatcher runs this test binary as nobody, watching dir (see
// TestIntegrationWatcherProcess), and returns the function that stops it and
// returns what it opened and how many files it saw appear.
func startWatcher(t *testing.T, binDir, dir string) func() ([]string, int) {
	t.Helper()
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(binDir, "watcher")
	src, err := os.ReadFile(self)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(bin, src, 0o755); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "-test.run=^TestIntegrationWatcherProcess$", "-test.count=1")
	cmd.Env = append(os.Environ(), watchEnv+"="+dir)
	cmd.Dir = binDir
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	br := bufio.NewReader(out)
	if l, err := br.ReadString('\n'); err != nil || l != "ready\n" {
		t.Fatalf("watcher: first line %q, %v", l, err)
	}
	return func() ([]string, int) {
		stdin.Close()
		var opened []string
		events := 0
		for {
			l, err := br.ReadString('\n')
			if f, ok := strings.CutPrefix(l, "opened "); ok {
				opened = append(opened, strings.TrimSpace(f))
			}
			if n, ok := strings.CutPrefix(l, "events "); ok {
				fmt.Sscan(n, &events)
			}
			if err != nil {
				break
			}
		}
		cmd.Wait()
		return opened, events
	}
}

// TestIntegrationWatcherProcess is the watcher startWatcher runs as an
// unprivileged user: for each file created in (or moved into) the directory,
// it tries for 20 ms to open it and prints "opened NAME" when it could, with
// what it read from it a moment later. It
// stops when its stdin closes, printing "events N".
func TestIntegrationWatcherProcess(t *testing.T) {
	dir := os.Getenv(watchEnv)
	if dir == "" {
		t.Skip("run by TestIntegrationUploadedKeysAreNeverOpenToOthers")
	}
	fd, err := syscall.InotifyInit1(syscall.IN_CLOEXEC)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := syscall.InotifyAddWatch(fd, dir, syscall.IN_CREATE|syscall.IN_MOVED_TO); err != nil {
		t.Fatal(err)
	}
	fmt.Println("ready")
	events := 0
	done := make(chan struct{})
	go func() {
		io.Copy(io.Discard, os.Stdin)
		close(done)
	}()
	names := make(chan string, 1024)
	go func() {
		buf := make([]byte, 64<<10)
		for {
			n, err := syscall.Read(fd, buf)
			if err != nil {
				return
			}
			for off := 0; off+syscall.SizeofInotifyEvent <= n; {
				ev := (*syscall.InotifyEvent)(unsafe.Pointer(&buf[off]))
				name := strings.TrimRight(string(buf[off+syscall.SizeofInotifyEvent:off+syscall.SizeofInotifyEvent+int(ev.Len)]), "\x00")
				names <- name
				off += syscall.SizeofInotifyEvent + int(ev.Len)
			}
		}
	}()
	var mu sync.Mutex
	var wg sync.WaitGroup
	for {
		select {
		case <-done:
			wg.Wait()
			fmt.Printf("events %d\n", events)
			return
		case name := <-names:
			events++
			wg.Add(1)
			go func() { // at once, whatever the files before it do
				defer wg.Done()
				p := filepath.Join(dir, name)
				for deadline := time.Now().Add(20 * time.Millisecond); time.Now().Before(deadline); {
					f, err := os.Open(p)
					if err == nil { // the descriptor stays valid whatever the file's mode becomes
						time.Sleep(200 * time.Millisecond)
						b, _ := io.ReadAll(io.LimitReader(f, 64))
						f.Close()
						mu.Lock()
						fmt.Printf("opened %s (%d bytes read 200 ms later)\n", name, len(b))
						mu.Unlock()
						return
					}
					if os.IsNotExist(err) {
						return
					}
				}
			}()
		}
	}
}
