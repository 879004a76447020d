package tasks

import (
	"context"
	"fmt"
	"path/filepath"
	"strings"

	"github.com/kubeforge/kubeforge/internal/nodefile"
	"github.com/kubeforge/kubeforge/inventory"
	"github.com/kubeforge/kubeforge/manifests"
	"github.com/kubeforge/kubeforge/pki"
)

// NodeDir is where a host's rendered tree lives in the state dir.
func (e *Env) NodeDir(host string) string { return filepath.Join(e.StateDir, "nodes", host) }

// NodeFiles returns every file h receives from kubeforge (certificates,
// kubeconfigs, static pods, kubelet config and unit), except the join token
// material that is made just in time.
func (e *Env) NodeFiles(h *Host) ([]nodefile.File, error) {
	if e.PKI == nil {
		return nil, fmt.Errorf("render %s: PKI not loaded", h.Name)
	}
	files, err := e.PKI.NodeFiles(e.Inv, e.Seed(), h.Host)
	if err != nil {
		return nil, fmt.Errorf("render %s certificates: %w", h.Name, err)
	}
	kf, err := manifests.KubeletFiles(e.Inv, h.Host, e.kubeletParams(h))
	if err != nil {
		return nil, fmt.Errorf("render %s kubelet files: %w", h.Name, err)
	}
	files = append(files, kf...)
	files = append(files, manifests.APIProxyFiles(e.Inv, h.Host)...)
	files = append(files, manifests.AuditFiles(e.Inv, h.Host)...)
	if h.IsControlPlane() {
		pods, err := manifests.StaticPods(e.Inv, h.Host, manifests.ControlPlaneParams{Etcd: e.etcdParamsFor(h), ExternalCA: !e.PKI.HasCAKey(pki.CAName),
			TrustStores: trustStores(h), Encryption: len(e.PKI.EncryptionKeys()) > 0})
		if err != nil {
			return nil, fmt.Errorf("render %s static pods: %w", h.Name, err)
		}
		if pods, err = manifests.StampInputs(pods, files); err != nil {
			return nil, fmt.Errorf("render %s static pods: %w", h.Name, err)
		}
		files = append(files, pods...)
	}
	return files, nil
}

func (e *Env) kubeletParams(h *Host) manifests.KubeletParams {
	p := manifests.KubeletParams{NodeIP: h.NodeIP()}
	if h.Facts != nil {
		p.CgroupV1 = !h.Facts.CgroupV2
		p.Hostname = h.Facts.Hostname
		if h.Facts.Resolved {
			p.ResolvConf = manifests.SystemdResolvConf
		}
	}
	return p
}

// EtcdParamsFor returns the etcd member settings of control plane h: the first
// control plane starts a new cluster; each later one joins the members before
// it. The result depends only on the inventory order, so re-renders are stable.
func EtcdParamsFor(inv *inventory.Inventory, h *inventory.Host) manifests.EtcdParams {
	var members []string
	for _, cp := range inv.ControlPlanes() {
		members = append(members, cp.Name+"="+manifests.EtcdPeerURL(cp))
		if cp == h {
			break
		}
	}
	state := "new"
	if len(members) > 1 {
		state = "existing"
	}
	return manifests.EtcdParams{InitialCluster: strings.Join(members, ","), InitialClusterState: state}
}

// RenderTrees writes, for every host, the exact tree it receives under
// <state dir>/nodes/<host>/, so a user can inspect what will be pushed.
func RenderTrees(_ context.Context, env *Env) error {
	for _, h := range env.Hosts(env.Inv.Hosts) {
		files, err := env.NodeFiles(h)
		if err != nil {
			return err
		}
		if err := writeLocalTree(env.NodeDir(h.Name), files); err != nil {
			return fmt.Errorf("render %s: %w", h.Name, err)
		}
	}
	return nil
}

// trustStores are h's trust-store directories as its facts found them; nil
// when it was not read. A host that has none gets an empty list (not nil).
func trustStores(h *Host) []string {
	if h.Facts == nil {
		return nil
	}
	return append([]string{}, h.Facts.TrustStores...)
}
