package main

import (
	"errors"
	"testing"
	"time"
)

func TestOutagesRunFromTheFirstFailureToTheNextAnswer(t *testing.T) {
	t0 := time.Unix(1000, 0)
	at := func(ms int) time.Time { return t0.Add(time.Duration(ms) * time.Millisecond) }
	down := errors.New("connection refused")
	var o Outages
	for _, p := range []struct {
		ms  int
		err error
	}{{0, nil}, {200, down}, {400, down}, {600, nil}, {800, down}, {1000, nil}, {1200, down}} {
		o.observe(at(p.ms), p.err)
	}
	o.close(at(2000)) // the stop ends the outage in progress
	if o.Polls != 7 || o.Failed != 4 || o.Count != 3 {
		t.Errorf("polls %d failed %d outages %d, want 7 4 3", o.Polls, o.Failed, o.Count)
	}
	if o.Longest != 0.8 || o.Total != 1.4 {
		t.Errorf("longest %v total %v, want 0.8 and 1.4", o.Longest, o.Total)
	}
	if o.Last != "connection refused" {
		t.Errorf("last error %q", o.Last)
	}
}
