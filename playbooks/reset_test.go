package playbooks

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/kubeforge/kubeforge/inventory"
	"github.com/kubeforge/kubeforge/ssh"
	"github.com/kubeforge/kubeforge/ssh/sshtest"
	"github.com/kubeforge/kubeforge/tasks"
	xssh "golang.org/x/crypto/ssh"
)

// TestResetOfControlPlanesRefusesToWipeEtcdDataNoMemberCanRemove: `reset
// --hosts cp1` of three control planes, with no staying control plane whose
// etcd answers, resets nothing while cp1 holds etcd data (its member cannot
// be removed first), names the command that goes on, and with --force does
// the reset. The reset itself is recorded, not run: the in-process SSH
// server runs commands on this machine.
func TestResetOfControlPlanesRefusesToWipeEtcdDataNoMemberCanRemove(t *testing.T) {
	signer, keyFile := sshtest.WriteKey(t, "")
	srv := sshtest.Start(t, sshtest.Options{AuthorizedKeys: []xssh.PublicKey{signer.PublicKey()}})
	known := srv.WriteKnownHosts(t)
	tests := []struct {
		name      string
		data      bool
		force     bool
		wantReset bool
		wantErr   string
		wantWarn  string
	}{
		{name: "etcd data and no staying member answers", data: true,
			wantErr: "the etcd members of cp1 cannot be removed before their data"},
		{name: "with --force", data: true, force: true, wantReset: true, wantWarn: "--force: no control plane that stays (cp2, cp3) answered"},
		{name: "no etcd data on the host", wantReset: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dataDir := filepath.Join(t.TempDir(), "etcd")
			if tt.data {
				mustMkdir(t, filepath.Join(dataDir, "member"))
			}
			inv := &inventory.Inventory{Path: "cluster.yaml", Cluster: inventory.Cluster{Name: "c",
				Etcd: inventory.Component{ExtraArgs: map[string]string{"data-dir": dataDir}}}}
			for i, n := range []string{"cp1", "cp2", "cp3"} {
				inv.Hosts = append(inv.Hosts, &inventory.Host{Name: n, Address: "192.0.2." + string(rune('1'+i)), Roles: []inventory.Role{inventory.RoleControlPlane}})
			}
			// No PKI in the state dir: no staying member can be asked (and no host but cp1 is dialled).
			env := tasks.NewEnv(inv, t.TempDir(), slog.New(slog.NewTextHandler(io.Discard, nil)), tasks.Options{Force: tt.force})
			defer env.Close()
			var mu sync.Mutex
			var reset []string
			pb := Reset(inventory.Selector{Name: "chosen", Match: func(_ *inventory.Inventory, h *inventory.Host) bool { return h.Name == "cp1" }})(inv)
			for i := range pb.Steps {
				switch pb.Steps[i].Name {
				case "connect":
					pb.Steps[i].Run = func(ctx context.Context, env *tasks.Env, h *tasks.Host) error {
						c, err := env.Pool.Dial(ctx, ssh.Config{Host: h.Name, Address: srv.Host, Port: srv.Port, User: "root",
							IdentityFiles: []string{keyFile}, KnownHostsFiles: []string{known}, ConnectTimeout: 5 * time.Second})
						h.Client = c
						return err
					}
				case "reset/plan":
					pb.Steps[i].Run = func(context.Context, *tasks.Env, *tasks.Host) error { return nil }
				case "reset":
					pb.Steps[i].Run = func(_ context.Context, _ *tasks.Env, h *tasks.Host) error {
						mu.Lock()
						reset = append(reset, h.Name)
						mu.Unlock()
						return nil
					}
				}
			}
			err := (&Runner{}).Run(context.Background(), env, pb)
			if got := len(reset) > 0; got != tt.wantReset {
				t.Errorf("reset ran on %v; want reset %v", reset, tt.wantReset)
			}
			if tt.wantErr == "" {
				if err != nil {
					t.Fatalf("reset: %v", err)
				}
			} else {
				var ref *tasks.ErrRefused
				if !errors.As(err, &ref) || !strings.Contains(err.Error(), tt.wantErr) ||
					!strings.Contains(err.Error(), "`kubeforge reset -i cluster.yaml --hosts cp1 --force`") {
					t.Fatalf("reset: %v; want a refusal with %q that names the command with --force", err, tt.wantErr)
				}
			}
			if warn := strings.Join(env.Warnings(), "\n"); !strings.Contains(warn, tt.wantWarn) {
				t.Errorf("warnings %q; want %q", warn, tt.wantWarn)
			}
			if _, err := os.Stat(filepath.Join(dataDir, "member")); tt.data && err != nil {
				t.Errorf("etcd data gone: %v", err)
			}
		})
	}
}
