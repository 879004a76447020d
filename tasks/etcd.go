package tasks

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/url"
	"strconv"
	"time"

	"go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
	"google.golang.org/grpc"
	"k8s.io/apimachinery/pkg/util/wait"

	"github.com/kubeforge/kubeforge/manifests"
)

// etcdClient connects to the etcd member of control plane via, through its SSH
// connection, with the API server's etcd client certificate (as kubeadm does).
func etcdClient(ctx context.Context, env *Env, via *Host) (*clientv3.Client, error) {
	files, err := env.PKI.NodeFiles(env.Inv, env.Seed(), via.Host)
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
	endpoint := net.JoinHostPort(via.NodeIP(), strconv.Itoa(manifests.EtcdClientPort))
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

// liveEtcd connects to a live etcd member (see etcdHost).
func (e *Env) liveEtcd(ctx context.Context) (*clientv3.Client, *Host, error) {
	via, err := e.etcdHost()
	if err != nil {
		return nil, nil, err
	}
	cli, err := etcdClient(ctx, e, via)
	if err != nil {
		return nil, nil, err
	}
	return cli, via, nil
}

// addEtcdLearner registers h as a learner member, unless a member with its
// peer URL exists already (an interrupted run got that far). Another learner
// that never started (etcd allows one) is removed first; one that runs is
// promoted first. It returns h's member ID and the etcd flags for h, built
// from the member list etcd returned, as kubeadm does.
func addEtcdLearner(ctx context.Context, cli *clientv3.Client, h *Host) (uint64, manifests.EtcdParams, error) {
	peer := manifests.EtcdPeerURL(h.Host)
	list, err := cli.MemberList(ctx)
	if err != nil {
		return 0, manifests.EtcdParams{}, fmt.Errorf("list etcd members: %w", err)
	}
	members := toMembers(list.Members)
	for _, m := range members {
		if m.PeerURL == peer {
			h.Log.Info("etcd member exists; reusing it", "id", hexID(m.ID), "learner", m.Learner)
			return m.ID, manifests.EtcdParams{InitialCluster: initialCluster(members, m.ID, h), InitialClusterState: "existing"}, nil
		}
	}
	for _, m := range members {
		if !m.Learner {
			continue
		}
		if m.Name == "" {
			if _, err := cli.MemberRemove(ctx, m.ID); err != nil {
				return 0, manifests.EtcdParams{}, fmt.Errorf("remove unstarted etcd learner %s (%s): %w", hexID(m.ID), m.PeerURL, err)
			}
			h.Changed(Change{Kind: ChangeEtcd, What: "removed unstarted learner " + m.PeerURL})
			continue
		}
		if err := promoteEtcdMember(ctx, cli, h, m.ID, 2*time.Minute); err != nil {
			return 0, manifests.EtcdParams{}, fmt.Errorf("etcd has a learner (%s) that must be promoted before %s joins: %w", m.Name, h.Name, err)
		}
	}
	// etcd refuses a member change for a few seconds after a member (the voter
	// just promoted) connects: "unhealthy cluster". kubeadm retries; so does this.
	var resp *clientv3.MemberAddResponse
	werr := wait.PollUntilContextTimeout(ctx, time.Second, time.Minute, true, func(ctx context.Context) (bool, error) {
		resp, err = cli.MemberAddAsLearner(ctx, []string{peer})
		if err != nil && errors.Is(rpctypes.Error(err), rpctypes.ErrUnhealthy) {
			return false, nil
		}
		return true, nil
	})
	if werr != nil && err == nil {
		err = werr
	}
	if err != nil {
		return 0, manifests.EtcdParams{}, fmt.Errorf("add etcd learner %s: %w", peer, err)
	}
	h.Changed(Change{Kind: ChangeEtcd, What: "added learner member " + peer})
	return resp.Member.ID, manifests.EtcdParams{InitialCluster: initialCluster(toMembers(resp.Members), resp.Member.ID, h), InitialClusterState: "existing"}, nil
}

// toMembers converts etcd's member list.
func toMembers(ms []*etcdserverpb.Member) []EtcdMember {
	out := make([]EtcdMember, 0, len(ms))
	for _, m := range ms {
		em := EtcdMember{ID: m.ID, Name: m.Name, Learner: m.IsLearner}
		if len(m.PeerURLs) > 0 {
			em.PeerURL = m.PeerURLs[0]
		}
		out = append(out, em)
	}
	return out
}

// ReconcileEtcd applies the plan's membership changes that are not joins:
// it removes the members of control planes that lost their data (they
// rejoin as learners) and unstarted learners of no host, and promotes
// learners that have data. Removal keeps quorum: a member is removed only
// while the others that answer are a majority without it.
func ReconcileEtcd(ctx context.Context, env *Env) error {
	if env.Plan == nil || len(env.Plan.Etcd) == 0 {
		return nil
	}
	cli, via, err := env.liveEtcd(ctx)
	if err != nil {
		return err
	}
	defer cli.Close()
	for _, a := range env.Plan.Etcd {
		id, err := strconv.ParseUint(a.Member, 16, 64)
		if err != nil {
			return fmt.Errorf("etcd member ID %q: %w", a.Member, err)
		}
		h := via
		if ih := env.Inv.Host(a.Host); ih != nil {
			h = env.Host(ih)
		}
		switch a.Action {
		case "remove":
			if err := removalKeepsQuorum(ctx, cli, via, id); err != nil {
				return err
			}
			if _, err := cli.MemberRemove(ctx, id); err != nil && !errors.Is(err, rpctypes.ErrMemberNotFound) {
				return fmt.Errorf("remove etcd member %s (%s): %w", a.Member, a.Reason, err)
			}
			h.Changed(Change{Kind: ChangeEtcd, What: "removed member " + a.Member})
		case "promote":
			if err := promoteEtcdMember(ctx, cli, h, id, env.waitTimeout()); err != nil {
				return err
			}
		}
	}
	return nil
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

// removalKeepsQuorum checks, just before member id is removed, what the plan
// believed: that the member is dead (its client port does not answer, as seen
// from via) and that the voters left that answer are a majority of the voters
// left. A learner, or a member already gone, passes.
func removalKeepsQuorum(ctx context.Context, cli *clientv3.Client, via *Host, id uint64) error {
	list, err := cli.MemberList(ctx)
	if err != nil {
		return fmt.Errorf("list etcd members before a removal: %w", err)
	}
	var voters []memberLife
	for _, m := range list.Members {
		if !m.IsLearner {
			voters = append(voters, memberLife{ID: m.ID, Name: m.Name, Answers: memberAnswers(ctx, via, m.ClientURLs)})
		}
	}
	return quorumAfterRemoval(voters, id)
}

// memberLife is a voting member and whether its client port answered.
type memberLife struct {
	ID      uint64
	Name    string
	Answers bool
}

// quorumAfterRemoval refuses to remove voter id when it answers, or when the
// voters that answer without it are no majority of the voters left.
func quorumAfterRemoval(voters []memberLife, id uint64) error {
	left, live := 0, 0
	for _, m := range voters {
		switch {
		case m.ID == id && m.Answers:
			return &ErrRefused{Reason: fmt.Sprintf("etcd member %s (%s) was planned for removal as dead, but its client port answers: "+
				"its data is where kubeforge did not look (cluster.etcd.extraArgs.data-dir must name it); nothing was removed", hexID(id), m.Name)}
		case m.ID == id:
		default:
			left++
			if m.Answers {
				live++
			}
		}
	}
	if left == len(voters) {
		return nil // a learner, or already gone
	}
	if live < left/2+1 {
		return &ErrRefused{Reason: fmt.Sprintf("removing etcd member %s would leave %d voter(s) of which %d answer: no majority; "+
			"bring the members that do not answer back, or restore from a backup; nothing was removed", hexID(id), left, live)}
	}
	return nil
}

// memberAnswers reports whether one of a member's client URLs accepts a TCP
// connection made from via (3 s).
func memberAnswers(ctx context.Context, via *Host, urls []string) bool {
	for _, u := range urls {
		pu, err := url.Parse(u)
		if err != nil || pu.Host == "" {
			continue
		}
		dctx, cancel := context.WithTimeout(ctx, 3*time.Second)
		c, err := via.Client.DialRemote(dctx, "tcp", pu.Host)
		cancel()
		if err == nil {
			c.Close()
			return true
		}
	}
	return false
}
