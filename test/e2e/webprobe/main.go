// Command webprobe is the e2e tests' workload for measuring disruption: a
// web server that drains gracefully, and a client that requests it without
// pause and prints its counts.
//
//	webprobe serve :8080        answers "ok <hostname>"; on SIGTERM it keeps
//	                            answering for 5 s (endpoints follow), then stops
//	webprobe probe URL          GET every 50 ms (5 s timeout); prints one JSON line
//	                            {"ok":N,"failed":M,"last":"...","failures":[...]} every
//	                            second (failures: the last 20, with their times)
package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"
)

func main() {
	if len(os.Args) != 3 {
		fmt.Fprintln(os.Stderr, "usage: webprobe serve ADDR | webprobe probe URL")
		os.Exit(2)
	}
	switch os.Args[1] {
	case "serve":
		serve(os.Args[2])
	case "probe":
		probe(os.Args[2])
	default:
		os.Exit(2)
	}
}

func serve(addr string) {
	host, _ := os.Hostname()
	srv := &http.Server{Addr: addr, Handler: http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		fmt.Fprintln(w, "ok", host)
	}), ReadHeaderTimeout: 5 * time.Second}
	go func() {
		sig := make(chan os.Signal, 1)
		signal.Notify(sig, syscall.SIGTERM, os.Interrupt)
		<-sig
		time.Sleep(5 * time.Second) // the Service's endpoints drop this pod meanwhile
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = srv.Shutdown(ctx)
	}()
	if err := srv.ListenAndServe(); err != nil && err != http.ErrServerClosed {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}

func probe(url string) {
	// 5 s, not 1: on this 2-core machine, with two upgrades importing
	// images at once, a live endpoint has taken over 1 s to answer, and a
	// slow answer is an answer. A dead endpoint (a Service rule left
	// pointing at a deleted pod) never answers, so it still counts.
	client := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	var ok, failed int
	last := ""
	var failures []string
	report := time.NewTicker(time.Second)
	tick := time.NewTicker(50 * time.Millisecond)
	for {
		select {
		case <-report.C:
			b, _ := json.Marshal(map[string]any{"ok": ok, "failed": failed, "last": last, "failures": failures})
			fmt.Println(string(b))
		case <-tick.C:
			resp, err := client.Get(url)
			if err == nil {
				_ = resp.Body.Close()
				if resp.StatusCode != http.StatusOK {
					err = fmt.Errorf("status %d", resp.StatusCode)
				}
			}
			if err != nil {
				failed++
				last = time.Now().UTC().Format(time.RFC3339Nano) + " " + err.Error()
				if failures = append(failures, last); len(failures) > 20 {
					failures = failures[1:]
				}
				continue
			}
			ok++
		}
	}
}
