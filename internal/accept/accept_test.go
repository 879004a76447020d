package accept

import (
	"context"
	"errors"
	"net"
	"syscall"
	"testing"
	"time"
)

// flakyListener fails its first Accepts with errs, then returns conn.
type flakyListener struct {
	net.Listener
	errs  []error
	calls int
	conn  net.Conn
}

func (l *flakyListener) Accept() (net.Conn, error) {
	l.calls++
	if len(l.errs) > 0 {
		err := l.errs[0]
		l.errs = l.errs[1:]
		return nil, err
	}
	if l.conn == nil {
		return nil, net.ErrClosed
	}
	return l.conn, nil
}

func TestNextWaitsOutFailuresUntilTheListenerCloses(t *testing.T) {
	a, b := net.Pipe()
	defer a.Close()
	defer b.Close()
	emfile := &net.OpError{Op: "accept", Net: "tcp", Err: syscall.EMFILE}
	tests := []struct {
		name      string
		errs      []error
		conn      net.Conn
		wantErr   error
		wantCalls int
	}{
		{name: "too many open files, then a connection", errs: []error{emfile, emfile, emfile, syscall.ECONNABORTED}, conn: a, wantCalls: 5},
		{name: "a closed listener ends it at once", errs: []error{net.ErrClosed, emfile}, wantErr: net.ErrClosed, wantCalls: 1},
		{name: "failures, then closed", errs: []error{emfile}, wantErr: net.ErrClosed, wantCalls: 2},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ln := &flakyListener{errs: tt.errs, conn: tt.conn}
			c, err := Next(context.Background(), ln, nil)
			if !errors.Is(err, tt.wantErr) || (tt.wantErr == nil && c != tt.conn) || ln.calls != tt.wantCalls {
				t.Fatalf("Next = %v, %v after %d Accepts; want %v, %v after %d", c, err, ln.calls, tt.conn, tt.wantErr, tt.wantCalls)
			}
		})
	}
}

func TestNextStopsWaitingWhenTheContextEnds(t *testing.T) {
	errs := make([]error, 100)
	for i := range errs {
		errs[i] = syscall.EMFILE
	}
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	done := make(chan error, 1)
	go func() { _, err := Next(ctx, &flakyListener{errs: errs}, nil); done <- err }()
	select {
	case err := <-done:
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("Next = %v, want the context's error", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Next did not return when its context ended")
	}
}
