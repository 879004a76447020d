// Command apidown measures how long API servers do not answer: it polls
// /readyz on each server every interval (with the kubeconfig's credentials,
// each request bounded by -timeout) until SIGINT or SIGTERM, then prints one
// JSON line per server and one for "any" (the times no server answered):
// polls, failed polls, the longest outage and the sum of all outages.
//
//	apidown -kubeconfig admin.conf https://10.0.0.1:6443 [URL...]
//
// An outage runs from the first failed poll after an answer to the next
// answer, so it is measured to within one interval.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"sync"
	"syscall"
	"time"

	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"
)

// Outages is what apidown prints per server.
type Outages struct {
	Server  string  `json:"server"`
	Polls   int     `json:"polls"`
	Failed  int     `json:"failed"`
	Longest float64 `json:"longestSeconds"`
	Total   float64 `json:"totalSeconds"`
	Count   int     `json:"outages"`
	Last    string  `json:"lastError,omitempty"`

	downSince      time.Time
	longest, total time.Duration
}

// observe records one poll's result at now.
func (o *Outages) observe(now time.Time, err error) {
	o.Polls++
	if err == nil {
		o.close(now)
		return
	}
	o.Failed++
	o.Last = err.Error()
	if o.downSince.IsZero() {
		o.downSince = now
		o.Count++
	}
}

// close ends an outage in progress at now.
func (o *Outages) close(now time.Time) {
	if o.downSince.IsZero() {
		return
	}
	d := now.Sub(o.downSince)
	o.total += d
	o.longest = max(o.longest, d)
	o.Total, o.Longest = o.total.Seconds(), o.longest.Seconds()
	o.downSince = time.Time{}
}

func main() {
	kubeconfig := flag.String("kubeconfig", "", "kubeconfig with the credentials (its server is replaced by each URL)")
	interval := flag.Duration("interval", 200*time.Millisecond, "time between polls")
	timeout := flag.Duration("timeout", 5*time.Second, "one request's limit: a slow answer on a loaded machine is still an answer")
	flag.Parse()
	if *kubeconfig == "" || flag.NArg() == 0 {
		fmt.Fprintln(os.Stderr, "usage: apidown -kubeconfig FILE URL...")
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, *kubeconfig, flag.Args(), *interval, *timeout); err != nil {
		fmt.Fprintln(os.Stderr, "apidown:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, kubeconfig string, servers []string, interval, timeout time.Duration) error {
	clients := make([]kubernetes.Interface, len(servers))
	for i, s := range servers {
		cfg, err := clientcmd.BuildConfigFromFlags(s, kubeconfig)
		if err != nil {
			return fmt.Errorf("read %s: %w", kubeconfig, err)
		}
		cfg.Timeout = timeout
		if clients[i], err = kubernetes.NewForConfig(cfg); err != nil {
			return fmt.Errorf("client for %s: %w", s, err)
		}
	}
	each := make([]*Outages, len(servers))
	for i, s := range servers {
		each[i] = &Outages{Server: s}
	}
	anyUp := &Outages{Server: "any"}
	tick := time.NewTicker(interval)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			now := time.Now()
			enc := json.NewEncoder(os.Stdout)
			for _, o := range append(each, anyUp) {
				o.close(now)
				if err := enc.Encode(o); err != nil {
					return err
				}
			}
			return nil
		case now := <-tick.C:
			errs := make([]error, len(clients))
			var wg sync.WaitGroup
			for i, kc := range clients {
				wg.Go(func() {
					rctx, cancel := context.WithTimeout(ctx, timeout)
					defer cancel()
					_, errs[i] = kc.Discovery().RESTClient().Get().AbsPath("/readyz").DoRaw(rctx)
				})
			}
			wg.Wait()
			if ctx.Err() != nil {
				continue // stopped during the poll: its failures are the stop's
			}
			var up error = fmt.Errorf("no server answered")
			for i, err := range errs {
				each[i].observe(now, err)
				if err == nil {
					up = nil
				}
			}
			anyUp.observe(now, up)
		}
	}
}
