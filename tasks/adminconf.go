package tasks

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/kubeforge/kubeforge/internal/atomicfile"
	"github.com/kubeforge/kubeforge/inventory"
	"github.com/kubeforge/kubeforge/pki"
)

// AdminKubeconfigPath is the admin kubeconfig in stateDir, the
// workstation's admin.conf.
func AdminKubeconfigPath(stateDir string) string { return filepath.Join(stateDir, "admin.conf") }

// readyzTimeout bounds one /readyz probe of an API server.
const readyzTimeout = 3 * time.Second

// APIServer is an API server an admin kubeconfig may name.
type APIServer struct {
	Server string // https://host:port
	Host   string // the control plane it is; "" for the controlPlaneEndpoint
}

func (s APIServer) String() string {
	if s.Host == "" {
		return s.Server + " (controlPlaneEndpoint)"
	}
	return s.Server + " (" + s.Host + ")"
}

// ServerProbe is what one API server said to GET /readyz: Err is nil when
// it answered "ok".
type ServerProbe struct {
	APIServer
	Err error
}

// ServerChoice is the API server an admin kubeconfig names, and why.
type ServerChoice struct {
	APIServer
	Was    string // the server the kubeconfig named before
	Moved  bool   // Server is not Was
	Reason string // for people: why this one
}

// ServerProber asks server's /readyz with the credentials of kubeconfig.
type ServerProber func(ctx context.Context, kubeconfig []byte, s APIServer) error

// ChooseServer picks the server an admin kubeconfig that names current
// should name, from probes (in order of preference): current while it
// answers, else the first that answers. It is an error when none answered.
func ChooseServer(current string, probes []ServerProbe) (ServerChoice, error) {
	var was *ServerProbe
	for i := range probes {
		if probes[i].Server == current {
			was = &probes[i]
		}
	}
	if was != nil && was.Err == nil {
		return ServerChoice{APIServer: was.APIServer, Was: current, Reason: was.String() + " answers /readyz"}, nil
	}
	why := current + " is none of the cluster's API servers"
	if was != nil {
		why = fmt.Sprintf("%s did not answer /readyz (%v)", was, was.Err)
	}
	for _, p := range probes {
		if p.Err == nil {
			return ServerChoice{APIServer: p.APIServer, Was: current, Moved: true, Reason: why + "; " + p.String() + " answers"}, nil
		}
	}
	if len(probes) == 0 {
		return ServerChoice{}, fmt.Errorf("no API server to probe")
	}
	failed := make([]string, len(probes))
	for i, p := range probes {
		failed[i] = fmt.Sprintf("%s: %v", p, p.Err)
	}
	return ServerChoice{}, fmt.Errorf("no API server answered /readyz:\n  %s", strings.Join(failed, "\n  "))
}

// APIServers are the servers an admin kubeconfig of inv may name, in order
// of preference: the controlPlaneEndpoint (when set), then each control
// plane that stays, in the file's order.
func APIServers(inv *inventory.Inventory) []APIServer {
	var out []APIServer
	if inv.Cluster.ControlPlaneEndpoint != "" {
		out = append(out, APIServer{Server: inv.ServerURL(nil)}) // the endpoint: no seed plays a part
	}
	for _, cp := range inv.ControlPlanes() {
		if !cp.Remove {
			out = append(out, APIServer{Server: pki.LocalServerURL(cp), Host: cp.Name})
		}
	}
	return out
}

// probeServers probes the server named current first and, only when it
// does not answer, every other candidate, in order.
func probeServers(ctx context.Context, kubeconfig []byte, current string, candidates []APIServer, probe ServerProber) []ServerProbe {
	var out []ServerProbe
	for _, c := range candidates {
		if c.Server == current {
			p := ServerProbe{APIServer: c, Err: probe(ctx, kubeconfig, c)}
			if p.Err == nil {
				return []ServerProbe{p}
			}
			out = append(out, p)
		}
	}
	for _, c := range candidates {
		if c.Server != current {
			out = append(out, ServerProbe{APIServer: c, Err: probe(ctx, kubeconfig, c)})
		}
	}
	return out
}

// readyz asks the API server of cfg for /readyz.
func readyz(ctx context.Context, cfg *rest.Config) error {
	cfg.Timeout = readyzTimeout
	kc, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return fmt.Errorf("make API client: %w", err)
	}
	body, err := kc.Discovery().RESTClient().Get().AbsPath("/readyz").DoRaw(ctx)
	if err != nil {
		return err
	}
	if s := strings.TrimSpace(string(body)); s != "ok" {
		return fmt.Errorf("/readyz said %q", s)
	}
	return nil
}

// DirectReadyz is a ServerProber that connects from here, with no tunnel:
// what kubectl on this workstation does with the kubeconfig.
func DirectReadyz(ctx context.Context, kubeconfig []byte, s APIServer) error {
	cfg, err := clientcmd.RESTConfigFromKubeConfig(kubeconfig)
	if err != nil {
		return fmt.Errorf("load kubeconfig: %w", err)
	}
	cfg.Host = s.Server
	return readyz(ctx, cfg)
}

// kubeconfigServer returns the server of the current context's cluster.
func kubeconfigServer(kubeconfig []byte) (string, error) {
	cfg, err := clientcmd.Load(kubeconfig)
	if err != nil {
		return "", fmt.Errorf("load kubeconfig: %w", err)
	}
	if c := cfg.Contexts[cfg.CurrentContext]; c != nil && cfg.Clusters[c.Cluster] != nil {
		return cfg.Clusters[c.Cluster].Server, nil
	}
	return "", fmt.Errorf("load kubeconfig: its current context %q names no cluster", cfg.CurrentContext)
}

// withServer returns kubeconfig with every cluster that named from naming to instead.
func withServer(kubeconfig []byte, from, to string) ([]byte, error) {
	cfg, err := clientcmd.Load(kubeconfig)
	if err != nil {
		return nil, fmt.Errorf("load kubeconfig: %w", err)
	}
	for _, c := range cfg.Clusters {
		if c.Server == from {
			c.Server = to
		}
	}
	out, err := clientcmd.Write(*cfg)
	if err != nil {
		return nil, fmt.Errorf("write kubeconfig: %w", err)
	}
	return out, nil
}

// LiveAdminKubeconfig reads the admin kubeconfig in stateDir and returns it
// naming an API server of inv that answers probe now (the one it names while
// that answers), with the choice. It changes no file.
func LiveAdminKubeconfig(ctx context.Context, inv *inventory.Inventory, stateDir string, probe ServerProber) ([]byte, ServerChoice, error) {
	path := AdminKubeconfigPath(stateDir)
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, ServerChoice{}, fmt.Errorf("read admin kubeconfig: %w", err)
	}
	current, err := kubeconfigServer(data)
	if err != nil {
		return nil, ServerChoice{}, fmt.Errorf("read admin kubeconfig %s: %w", path, err)
	}
	choice, err := ChooseServer(current, probeServers(ctx, data, current, APIServers(inv), probe))
	if err != nil {
		return nil, ServerChoice{}, fmt.Errorf("the admin kubeconfig %s names %s: %w", path, current, err)
	}
	if !choice.Moved {
		return data, choice, nil
	}
	out, err := withServer(data, current, choice.Server)
	if err != nil {
		return nil, ServerChoice{}, err
	}
	return out, choice, nil
}

// adminServer is the server the state dir's admin kubeconfig names: the
// controlPlaneEndpoint when set; else the control plane it names now while
// that is still one of the inventory's (a run moves it off one that stopped
// answering: followLiveAPIServer); else the seed's.
func (e *Env) adminServer() string {
	if e.Inv.Cluster.ControlPlaneEndpoint != "" {
		return e.serverURL()
	}
	if data, err := os.ReadFile(e.AdminKubeconfigPath()); err == nil {
		if current, err := kubeconfigServer(data); err == nil {
			for _, s := range APIServers(e.Inv) {
				if s.Server == current {
					return current
				}
			}
		}
	}
	return e.serverURL()
}

// tunnelReadyz is the ServerProber of a run: it asks the control plane's
// own API server, through that host's SSH connection.
func (e *Env) tunnelReadyz(ctx context.Context, kubeconfig []byte, s APIServer) error {
	ih := e.Inv.Host(s.Host)
	if ih == nil {
		return fmt.Errorf("no control plane to reach it through")
	}
	h := e.Host(ih)
	if h.Client == nil {
		return fmt.Errorf("%s is not connected", h.Name)
	}
	cfg, err := apiConfig(kubeconfig, h)
	if err != nil {
		return err
	}
	return readyz(ctx, cfg)
}

// followLiveAPIServer moves the state dir's admin kubeconfig off an API
// server that does not answer /readyz to one that does, and says so. With a
// controlPlaneEndpoint it does nothing: the endpoint is the stable name
// (docs/ha.md). A dry run only says what a run would do. It never fails the
// run: what it cannot do is logged.
func (e *Env) followLiveAPIServer(ctx context.Context, admin []byte, probe ServerProber) {
	if e.Inv.Cluster.ControlPlaneEndpoint != "" {
		return
	}
	path := e.AdminKubeconfigPath()
	data, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return // none yet (a dry run before the first run)
	}
	if err != nil {
		e.Log.Warn("read admin kubeconfig", "path", path, "err", err)
		return
	}
	current, err := kubeconfigServer(data)
	if err != nil {
		e.Log.Warn("read admin kubeconfig", "path", path, "err", err)
		return
	}
	choice, err := ChooseServer(current, probeServers(ctx, admin, current, APIServers(e.Inv), probe))
	if err != nil {
		e.Log.Warn("admin kubeconfig left as it is", "path", path, "server", current, "err", err)
		return
	}
	if !choice.Moved {
		return
	}
	if e.Opts.DryRun {
		e.warn(fmt.Sprintf("the admin kubeconfig %s names %s; a run moves it to %s: %s", path, current, choice.APIServer, choice.Reason))
		return
	}
	out, err := withServer(data, current, choice.Server)
	if err == nil {
		err = atomicfile.Write(path, out, 0o600)
	}
	if err != nil {
		e.warn(fmt.Sprintf("the admin kubeconfig %s names %s, which does not answer, but it could not be moved to %s: %v", path, current, choice.APIServer, err))
		return
	}
	e.warn(fmt.Sprintf("moved the admin kubeconfig %s from %s to %s: %s", path, current, choice.APIServer, choice.Reason))
}
