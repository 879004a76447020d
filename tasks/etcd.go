package tasks

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net"
	"strconv"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
	"google.golang.org/grpc"
	"k8s.io/apimachinery/pkg/util/wait"
)

// etcdClient connects to the etcd member of control plane via, through its SSH
// connection, with the API server's etcd client certificate (as kubeadm does).
func etcdClient(ctx context.Context, env *Env, via *Host) (*clientv3.Client, error) {
	files, err := env.PKI.NodeFiles(env.Inv, via.Host)
	if err != nil {
		return nil, fmt.Errorf("etcd client certificate: %w", err)
	}
	byPath := map[string][]byte{}
	for _, f := range files {
		byPath[f.Path] = f.Data
	}
	cert, err := tls.X509KeyPair(byPath["/etc/kubernetes/pki/apiserver-etcd-client.crt"], byPath["/etc/kubernetes/pki/apiserver-etcd-client.key"])
	if err != nil {
		return nil, fmt.Errorf("etcd client certificate: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(byPath["/etc/kubernetes/pki/etcd/ca.crt"]) {
		return nil, fmt.Errorf("etcd client: no etcd CA certificate")
	}
	endpoint := net.JoinHostPort(via.NodeIP(), strconv.Itoa(2379))
	conn := via.Client
	cli, err := clientv3.New(clientv3.Config{
		Endpoints:   []string{"https://" + endpoint},
		DialTimeout: 10 * time.Second,
		TLS:         &tls.Config{Certificates: []tls.Certificate{cert}, RootCAs: pool, MinVersion: tls.VersionTLS12},
		Context:     ctx,
		DialOptions: []grpc.DialOption{grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) {
			return conn.DialRemote(ctx, "tcp", endpoint)
		})},
		Logger: zap.NewNop(),
	})
	if err != nil {
		return nil, fmt.Errorf("connect to etcd on %s: %w", via.Name, err)
	}
	return cli, nil
}

// addEtcdLearner registers h as a learner member, unless a member with its
// peer URL exists already (a previous run got that far). It returns the member ID.
func addEtcdLearner(ctx context.Context, cli *clientv3.Client, h *Host) (uint64, error) {
	peer := "https://" + net.JoinHostPort(h.NodeIP(), strconv.Itoa(2380))
	list, err := cli.MemberList(ctx)
	if err != nil {
		return 0, fmt.Errorf("list etcd members: %w", err)
	}
	for _, m := range list.Members {
		for _, u := range m.PeerURLs {
			if u == peer {
				return m.ID, nil
			}
		}
	}
	resp, err := cli.MemberAddAsLearner(ctx, []string{peer})
	if err != nil {
		return 0, fmt.Errorf("add etcd learner %s: %w", peer, err)
	}
	h.Changed(Change{Kind: ChangeEtcd, What: "added learner member " + peer})
	return resp.Member.ID, nil
}

// promoteEtcdMember makes the learner a voting member once it has caught up.
func promoteEtcdMember(ctx context.Context, cli *clientv3.Client, h *Host, id uint64, timeout time.Duration) error {
	var last error
	err := wait.PollUntilContextTimeout(ctx, 500*time.Millisecond, timeout, true, func(ctx context.Context) (bool, error) {
		list, err := cli.MemberList(ctx)
		if err != nil {
			last = err
			return false, nil
		}
		for _, m := range list.Members {
			if m.ID == id && !m.IsLearner {
				return true, nil
			}
		}
		if _, err := cli.MemberPromote(ctx, id); err != nil {
			last = err // "can only promote a learner member which is in sync with leader" until it catches up
			return false, nil
		}
		h.Changed(Change{Kind: ChangeEtcd, What: "promoted member to voter"})
		return true, nil
	})
	if err != nil {
		return fmt.Errorf("promote etcd member of %s: %w (last: %v)", h.Name, err, last)
	}
	return nil
}
