package tasks

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"net"
	"strconv"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/kubeforge/kubeforge/inventory"
)

// PlanPodCIDRs gives every host its pod CIDR before its kubelet starts, so
// each node's pod network config can be pushed with its files and the node
// registers Ready: a node that exists keeps the CIDR it has; one without gets
// the lowest free block of the pod subnet, written into its Node object (made
// here for hosts that are not nodes yet; the kubelet adopts it). The
// controller manager's range allocator then counts these blocks as taken.
// Only for the built-in pod network on an IPv4 pod subnet; otherwise the
// controller manager allocates and the network step waits for it.
func PlanPodCIDRs(ctx context.Context, env *Env) error {
	if env.NetworkPlugin() == inventory.CNIManifest {
		return nil
	}
	alloc, err := newCIDRAllocator(env.Inv.Cluster.PodSubnet, env.Inv.Cluster.ControllerManager.ExtraArgs)
	if err != nil {
		env.Log.Info("pod CIDRs left to the controller manager", "reason", err)
		return nil
	}
	nodes, err := env.Kube.CoreV1().Nodes().List(ctx, metav1.ListOptions{})
	if err != nil {
		return fmt.Errorf("list nodes: %w", err)
	}
	byName := map[string]*corev1.Node{}
	for i := range nodes.Items {
		n := &nodes.Items[i]
		byName[n.Name] = n
		if n.Spec.PodCIDR != "" {
			alloc.occupy(n.Spec.PodCIDR)
		}
	}
	cidrs := map[string]string{}
	for _, h := range env.Hosts(env.Inv.Hosts) {
		n := byName[h.Name]
		if n != nil && n.Spec.PodCIDR != "" {
			cidrs[h.Name] = n.Spec.PodCIDR
			continue
		}
		cidr, err := alloc.next()
		if err != nil {
			return err
		}
		got, err := env.setPodCIDR(ctx, h, n != nil, cidr)
		if err != nil {
			return err
		}
		alloc.occupy(got)
		cidrs[h.Name] = got
	}
	env.mu.Lock()
	env.podCIDRs = cidrs
	env.mu.Unlock()
	return nil
}

// setPodCIDR writes cidr into h's Node object, creating the Node when it does
// not exist. If the controller manager set one first, that one is kept.
func (e *Env) setPodCIDR(ctx context.Context, h *Host, exists bool, cidr string) (string, error) {
	nodes := e.Kube.CoreV1().Nodes()
	if !exists {
		// The kubelet adopts a Node that exists and ignores --register-with-taints
		// then: the Node is made with its taints and labels, so no pod lands
		// on it before nodes/mark.
		labels, taints := nodeMarks(h)
		n := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: h.Name, Labels: labels},
			Spec: corev1.NodeSpec{PodCIDR: cidr, PodCIDRs: []string{cidr}, Taints: taints}}
		_, err := nodes.Create(ctx, n, metav1.CreateOptions{FieldManager: "kubeforge"})
		if err == nil {
			h.Changed(Change{Kind: ChangeNode, What: "registered node with pod CIDR " + cidr})
			return cidr, nil
		}
		if !apierrors.IsAlreadyExists(err) {
			return "", fmt.Errorf("create node %s: %w", h.Name, err)
		}
	}
	patch, _ := json.Marshal(map[string]any{"spec": map[string]any{"podCIDR": cidr, "podCIDRs": []string{cidr}}})
	if _, err := nodes.Patch(ctx, h.Name, types.StrategicMergePatchType, patch, metav1.PatchOptions{FieldManager: "kubeforge"}); err == nil {
		h.Changed(Change{Kind: ChangeNode, What: "set pod CIDR " + cidr})
		return cidr, nil
	}
	n, err := nodes.Get(ctx, h.Name, metav1.GetOptions{})
	if err != nil {
		return "", fmt.Errorf("get node %s: %w", h.Name, err)
	}
	if n.Spec.PodCIDR == "" {
		return "", fmt.Errorf("set pod CIDR of node %s: refused", h.Name)
	}
	return n.Spec.PodCIDR, nil
}

// podCIDR returns the CIDR planned for h, or "" when the controller manager allocates.
func (e *Env) podCIDR(h *Host) string {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.podCIDRs[h.Name]
}

// cidrAllocator hands out the blocks of an IPv4 pod subnet in order, as the
// controller manager's range allocator does.
type cidrAllocator struct {
	base      uint32
	blocks    uint32
	blockBits uint
	maskSize  int
	used      map[uint32]bool
}

func newCIDRAllocator(subnet string, cmArgs map[string]string) (*cidrAllocator, error) {
	_, ipnet, err := net.ParseCIDR(subnet)
	if err != nil || ipnet.IP.To4() == nil {
		return nil, fmt.Errorf("pod subnet %q is not a single IPv4 CIDR", subnet)
	}
	mask := 24
	for _, k := range []string{"node-cidr-mask-size-ipv4", "node-cidr-mask-size"} {
		if v, ok := cmArgs[k]; ok {
			if mask, err = strconv.Atoi(v); err != nil {
				return nil, fmt.Errorf("controllerManager.extraArgs %s=%q: %w", k, v, err)
			}
			break
		}
	}
	prefix, _ := ipnet.Mask.Size()
	if mask < prefix || mask > 30 || mask-prefix > 16 {
		return nil, fmt.Errorf("node CIDR mask /%d does not fit pod subnet %s", mask, subnet)
	}
	return &cidrAllocator{
		base: binary.BigEndian.Uint32(ipnet.IP.To4()), blocks: 1 << uint(mask-prefix),
		blockBits: uint(32 - mask), maskSize: mask, used: map[uint32]bool{},
	}, nil
}

func (a *cidrAllocator) occupy(cidr string) {
	ip, _, err := net.ParseCIDR(cidr)
	if err != nil || ip.To4() == nil {
		return
	}
	off := binary.BigEndian.Uint32(ip.To4()) - a.base
	if i := off >> a.blockBits; i < a.blocks {
		a.used[i] = true
	}
}

func (a *cidrAllocator) next() (string, error) {
	for i := uint32(0); i < a.blocks; i++ {
		if !a.used[i] {
			a.used[i] = true
			ip := make(net.IP, 4)
			binary.BigEndian.PutUint32(ip, a.base+i<<a.blockBits)
			return fmt.Sprintf("%s/%d", ip, a.maskSize), nil
		}
	}
	return "", fmt.Errorf("the pod subnet has no free /%d block left for another node", a.maskSize)
}
