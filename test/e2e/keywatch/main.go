// Command keywatch is the e2e tests' unprivileged local user on a host: it
// watches directories with inotify and tries to open every file that appears
// or changes there, as soon as it does, and reports each one it could read
// that holds a secret (a private key, a kubeconfig's client key, a token).
// kubeforge writes secrets with their final mode from the first instant, so
// a run under this watcher must leave it nothing to report (issue 26).
//
// Usage: keywatch DIR... ; it runs until SIGTERM, then prints one line per
// file it read a secret from ("leak PATH: MARKER") and a last line
// "watched N events, opened M files".
package main

import (
	"bytes"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"sort"
	"sync"
	"syscall"

	"golang.org/x/sys/unix"
)

// markers are what a secret file holds.
var markers = [][]byte{[]byte("PRIVATE KEY"), []byte("client-key-data"), []byte("token:"), []byte("secret:")}

func main() {
	fd, err := unix.InotifyInit1(unix.IN_CLOEXEC)
	if err != nil {
		fmt.Fprintln(os.Stderr, "inotify:", err)
		os.Exit(1)
	}
	dirs := map[int]string{}
	var mu sync.Mutex
	leaks := map[string]string{}
	events, opened := 0, 0
	const mask = unix.IN_CREATE | unix.IN_MOVED_TO | unix.IN_MODIFY | unix.IN_CLOSE_WRITE | unix.IN_ATTRIB
	var watch func(dir string)
	watch = func(dir string) {
		wd, err := unix.InotifyAddWatch(fd, dir, mask)
		if err != nil {
			return // a directory this user cannot read: nothing in it can be opened either
		}
		mu.Lock()
		dirs[wd] = dir
		mu.Unlock()
		entries, _ := os.ReadDir(dir)
		for _, e := range entries {
			if e.IsDir() {
				watch(filepath.Join(dir, e.Name()))
			}
		}
	}
	try := func(p string) {
		f, err := os.Open(p)
		if err != nil {
			return
		}
		defer f.Close()
		if st, err := f.Stat(); err != nil || !st.Mode().IsRegular() {
			return
		}
		mu.Lock()
		opened++
		mu.Unlock()
		// The descriptor stays valid whatever chmod follows: read what the file holds now and later.
		for range 50 {
			buf := make([]byte, 1<<20)
			n, _ := f.ReadAt(buf, 0)
			for _, m := range markers {
				if bytes.Contains(buf[:n], m) {
					mu.Lock()
					leaks[p] = string(m)
					mu.Unlock()
					return
				}
			}
			if n > 0 {
				return
			}
			unix.Nanosleep(&unix.Timespec{Nsec: 2e6}, nil)
		}
	}
	for _, d := range os.Args[1:] {
		watch(d)
	}
	go func() {
		buf := make([]byte, 64<<10)
		for {
			n, err := unix.Read(fd, buf)
			if err != nil {
				return
			}
			for off := 0; off+unix.SizeofInotifyEvent <= n; {
				ev := (*unix.InotifyEvent)(unsafePointer(&buf[off]))
				name := ""
				if ev.Len > 0 {
					name = string(bytes.TrimRight(buf[off+unix.SizeofInotifyEvent:off+unix.SizeofInotifyEvent+int(ev.Len)], "\x00"))
				}
				off += unix.SizeofInotifyEvent + int(ev.Len)
				mu.Lock()
				dir := dirs[int(ev.Wd)]
				events++
				mu.Unlock()
				if dir == "" || name == "" {
					continue
				}
				p := filepath.Join(dir, name)
				if ev.Mask&unix.IN_ISDIR != 0 {
					if ev.Mask&(unix.IN_CREATE|unix.IN_MOVED_TO) != 0 {
						watch(p)
					}
					continue
				}
				go try(p)
			}
		}
	}()
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT)
	<-sig
	mu.Lock()
	defer mu.Unlock()
	var paths []string
	for p := range leaks {
		paths = append(paths, p)
	}
	sort.Strings(paths)
	for _, p := range paths {
		fmt.Printf("leak %s: %s\n", p, leaks[p])
	}
	fmt.Printf("watched %d events, opened %d files\n", events, opened)
}
