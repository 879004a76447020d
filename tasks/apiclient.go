package tasks

import (
	"context"
	"fmt"
	"net"
	"strconv"
	"time"

	"github.com/kubeforge/kubeforge/inventory"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
)

// apiConfig builds a client config from kubeconfig bytes whose traffic goes
// through the SSH connection of control plane h, to its own API server. So the
// workstation needs no route to port 6443.
func apiConfig(kubeconfig []byte, h *Host) (*rest.Config, error) {
	cfg, err := clientcmd.RESTConfigFromKubeConfig(kubeconfig)
	if err != nil {
		return nil, fmt.Errorf("load kubeconfig: %w", err)
	}
	target := net.JoinHostPort(h.NodeIP(), strconv.Itoa(inventory.DefaultAPIServerPort))
	// Connect to h's own API server and verify its certificate for h's
	// address, which every API server certificate carries (the endpoint in the
	// kubeconfig may name another control plane or a load balancer).
	cfg.TLSClientConfig.ServerName = h.NodeIP()
	cfg.Host = "https://" + target
	client := h.Client
	cfg.Dial = func(ctx context.Context, network, _ string) (net.Conn, error) {
		return client.DialRemote(ctx, network, target)
	}
	cfg.Timeout = 30 * time.Second
	cfg.QPS, cfg.Burst = 50, 100
	cfg.UserAgent = "kubeforge"
	return cfg, nil
}

// hostClient is a client of h's own API server (through its SSH connection)
// whose requests time out after timeout.
func hostClient(kubeconfig []byte, h *Host, timeout time.Duration) (kubernetes.Interface, error) {
	cfg, err := apiConfig(kubeconfig, h)
	if err != nil {
		return nil, err
	}
	cfg.Timeout = timeout
	kc, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return nil, fmt.Errorf("make API client: %w", err)
	}
	return kc, nil
}

// ConnectAPI makes env.Kube, a cluster-admin client tunnelled through the
// first reachable control plane. Once a run, it also moves the state dir's
// admin kubeconfig off an API server that stopped answering (and says so).
func ConnectAPI(ctx context.Context, env *Env) error {
	if env.Kube != nil {
		return nil
	}
	admin, err := env.PKI.AdminKubeconfig(env.Inv.Cluster.Name, env.serverURL())
	if err != nil {
		return fmt.Errorf("make admin kubeconfig: %w", err)
	}
	h, err := env.apiHost()
	if err != nil {
		return err
	}
	cfg, err := apiConfig(admin, h)
	if err != nil {
		return err
	}
	kc, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return fmt.Errorf("make API client: %w", err)
	}
	env.Kube, env.KubeConfig = kc, cfg
	env.followLiveAPIServer(ctx, admin, env.tunnelReadyz)
	return nil
}

// apiHost is the control plane the workstation talks to the API through:
// one whose API server was seen answering, else the one this run
// initialised, else any connected control plane that stays.
func (e *Env) apiHost() (*Host, error) {
	var up []string
	if e.Cluster != nil {
		up = e.Cluster.APIUp
	}
	if e.Plan != nil && e.Plan.Init != "" {
		up = append(up, e.Plan.Init)
	}
	cps := e.Hosts(e.Inv.ControlPlanes())
	for _, name := range up {
		for _, h := range cps {
			if h.Name == name && h.Client != nil && !e.Removing(h) {
				return h, nil
			}
		}
	}
	for _, h := range cps {
		if h.Client != nil && !e.Removing(h) {
			return h, nil
		}
	}
	return nil, fmt.Errorf("no connected control-plane host to reach the API server through")
}

// etcdHost is a control plane whose etcd member is live: the one that
// answered when the cluster was observed, else the one this run initialised.
func (e *Env) etcdHost() (*Host, error) {
	name := ""
	switch {
	case e.Cluster != nil && e.Cluster.Etcd != nil:
		name = e.Cluster.Etcd.Via
	case e.Plan != nil && e.Plan.Init != "":
		name = e.Plan.Init
	}
	if ih := e.Inv.Host(name); ih != nil {
		if h := e.Host(ih); h.Client != nil {
			return h, nil
		}
	}
	return nil, fmt.Errorf("no live etcd member to join through (observed none, and no control plane was initialised in this run)")
}
