// Package accept accepts connections the way a server that must stay up
// does: a failing Accept (too many open files, a connection aborted before
// it was taken) is waited out, not the end of the server.
package accept

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"time"
)

// The delays between failed Accepts: net/http's Server's.
const (
	firstDelay = 5 * time.Millisecond
	maxDelay   = time.Second
)

// Next returns ln's next connection. When Accept fails for any other reason
// than ln being closed, it tries again after a delay that starts at 5 ms and
// doubles up to 1 s, as net/http's Server does, logging the first failure of
// a run of them and, once one succeeds, how many there were. It returns
// ctx's error once ctx ends, and the error of a closed ln at once.
func Next(ctx context.Context, ln net.Listener, log *slog.Logger) (net.Conn, error) {
	var delay time.Duration
	failed := 0
	for {
		c, err := ln.Accept()
		if err == nil {
			if failed > 0 && log != nil {
				log.Info("accepting again", "failedAccepts", failed)
			}
			return c, nil
		}
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		if errors.Is(err, net.ErrClosed) {
			return nil, err
		}
		if failed == 0 && log != nil {
			log.Warn("accept failed; trying again with a growing delay", "err", err)
		}
		failed++
		delay = min(max(2*delay, firstDelay), maxDelay)
		t := time.NewTimer(delay)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil, ctx.Err()
		case <-t.C:
		}
	}
}
