package tasks

import (
	"context"
	"fmt"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"net"
	"sort"
	"strings"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/kubeforge/kubeforge/internal/nodefile"
	"github.com/kubeforge/kubeforge/inventory"
	"github.com/kubeforge/kubeforge/manifests"
)

// routesPath is the script that restores pod routes at boot.
const routesPath = "/etc/kubeforge/pod-routes.sh"

// routesUnit runs the routes script at boot.
const routesUnit = `[Unit]
Description=kubeforge pod network routes
After=network-online.target
Wants=network-online.target

[Service]
Type=oneshot
RemainAfterExit=yes
ExecStart=/bin/sh ` + routesPath + `

[Install]
WantedBy=multi-user.target
`

// NetworkPlugin is the pod network this run converges (docs/network.md): the
// inventory's cni.plugin; left out, the one the cluster is seen to run
// (ObserveCluster), so an existing cluster never changes network because
// kubeforge's default did; with none seen (a new cluster), the default.
func (e *Env) NetworkPlugin() string {
	if p := e.Inv.Cluster.CNI.Plugin; p != "" {
		return p
	}
	if e.Cluster != nil && e.Cluster.Network != "" {
		return e.Cluster.Network
	}
	return defaultNetwork(e.Inv)
}

// defaultNetwork is the pod network of a new cluster whose inventory names
// none: flannel, or the bridge for an IPv6 pod subnet (flannel's VXLAN is
// set up here for IPv4 only).
func defaultNetwork(inv *inventory.Inventory) string {
	if ip, _, err := net.ParseCIDR(inv.Cluster.PodSubnet); err == nil && ip.To4() == nil {
		return inventory.CNIBridge
	}
	return inventory.DefaultCNIPlugin
}

// overlayMTU is the pods' MTU on h under flannel: the MTU of the link that
// holds h's node address, less VXLAN's overhead.
func overlayMTU(h *Host) int {
	link := 0
	if h.Facts != nil {
		link = h.Facts.LinkMTU[h.NodeIP()]
	}
	return manifests.OverlayMTU(link)
}

// NetworkPlan is what the run does about the pod network.
type NetworkPlan struct {
	Plugin string `json:"plugin"`
	// Why this plugin: the inventory's, the cluster's (and where it was seen), or the default.
	Why string `json:"why"`
	// MTU is the pods' MTU (the smallest of the hosts') on an overlay; 0 otherwise.
	MTU int `json:"mtu,omitempty"`
	// Objects are the plugin's API objects that cluster/bootstrap creates or changes.
	Objects []ObjectPlan `json:"objects,omitempty"`
}

// ObjectPlan is an API object that will be created or changed.
type ObjectPlan struct {
	Action string `json:"action"` // create, change
	Object string `json:"object"` // Kind namespace/name
}

// PlanNetwork decides the pod network (NetworkPlugin) and what applying it
// changes in the cluster (a server-side dry run of each object), into
// env.Plan.Network. It refuses to move a cluster between the bridge and
// flannel: the pods of a running cluster would lose their network
// (docs/network.md says how to move one by hand).
func PlanNetwork(ctx context.Context, env *Env) error {
	if env.Plan == nil {
		return fmt.Errorf("plan the pod network: no decision made (cluster/observe skipped?)")
	}
	plugin := env.NetworkPlugin()
	np := &NetworkPlan{Plugin: plugin}
	seen, where := "", ""
	if env.Cluster != nil {
		seen, where = env.Cluster.Network, env.Cluster.NetworkSeen
	}
	switch {
	case env.Inv.Cluster.CNI.Plugin != "":
		np.Why = "cni.plugin in the inventory"
	case seen != "":
		np.Why = fmt.Sprintf("the cluster runs it (seen: %s); cni.plugin is unset, so an existing cluster keeps its network", where)
		if seen != inventory.DefaultCNIPlugin {
			np.Why += fmt.Sprintf(" (new clusters get %s: docs/network.md says how to move this one)", inventory.DefaultCNIPlugin)
		}
	default:
		np.Why = "the default for a new cluster"
	}
	if seen != "" && seen != plugin && plugin != inventory.CNIManifest {
		return &ErrRefused{Reason: fmt.Sprintf("the cluster runs the %s pod network (seen: %s) and the inventory asks for %s: "+
			"kubeforge does not move a running cluster between pod networks (every pod would lose its network until it is re-created). "+
			"Keep cni.plugin: %s (or leave cni.plugin out: an existing cluster keeps its network), "+
			"or move it by the procedure in docs/network.md (\"Moving a bridge cluster to flannel\"); nothing was changed", seen, where, plugin, seen)}
	}
	if plugin == inventory.CNIFlannel {
		for _, h := range env.Hosts(env.Inv.Hosts) {
			if m := overlayMTU(h); np.MTU == 0 || m < np.MTU {
				np.MTU = m
			}
		}
	}
	objs, err := manifests.NetworkObjects(env.Inv, plugin)
	if err != nil {
		return err
	}
	var a *applier
	if env.Cluster != nil && len(env.Cluster.APIUp) > 0 && env.KubeConfig != nil && len(objs) > 0 {
		if a, err = newApplier(env.KubeConfig); err != nil {
			return err
		}
	}
	for _, o := range objs {
		if a == nil {
			np.Objects = append(np.Objects, ObjectPlan{Action: "create", Object: objectName(o)})
			continue
		}
		action, name, err := a.dryRun(ctx, o)
		if apierrors.IsForbidden(err) {
			// A run stopped between the first API server and cluster/bootstrap: admin.conf's group has no
			// binding yet, so cluster/bootstrap, which makes it, has not applied these objects either.
			a = nil
			np.Objects = append(np.Objects, ObjectPlan{Action: "create", Object: objectName(o)})
			continue
		}
		if err != nil {
			return err
		}
		if action != "" {
			np.Objects = append(np.Objects, ObjectPlan{Action: action, Object: name})
		}
	}
	env.mu.Lock()
	env.Plan.Network = np
	env.mu.Unlock()
	return nil
}

// podNetworkFiles are h's pod network files for its own pod CIDR: under
// flannel, its CNI config; under the bridge, its CNI config and the routes
// script to every other node's pod CIDR, with its boot unit.
func podNetworkFiles(env *Env, h *Host, cidrs map[string]string) []nodefile.File {
	if env.NetworkPlugin() == inventory.CNIFlannel {
		return []nodefile.File{manifests.FlannelCNI(cidrs[h.Name], overlayMTU(h))}
	}
	var routes []string
	for _, o := range env.Inv.Hosts {
		if o.Name == h.Name || cidrs[o.Name] == "" {
			continue
		}
		routes = append(routes, fmt.Sprintf("ip route replace %s via %s", cidrs[o.Name], o.NodeIP()))
	}
	sort.Strings(routes)
	script := "#!/bin/sh\n# Written by kubeforge: routes to the other nodes' pod CIDRs.\nset -e\n" + strings.Join(routes, "\n") + "\n"
	return []nodefile.File{
		manifests.BridgeCNI(cidrs[h.Name]),
		{Path: routesPath, Mode: 0o755, Data: []byte(script)},
		{Path: "/etc/systemd/system/kubeforge-routes.service", Mode: 0o644, Data: []byte(routesUnit)},
	}
}

// PodNetwork sets up the built-in pod network on a host: under flannel, the
// CNI config for its own pod CIDR (flanneld, from its DaemonSet, makes the
// overlay); under the bridge, that config and a route to every other node's pod
// CIDR through that node's address, kept in a boot-time unit. With cni.plugin
// "manifest" it does nothing.
func PodNetwork(ctx context.Context, env *Env, h *Host) error {
	plugin := env.NetworkPlugin()
	if plugin == inventory.CNIManifest {
		return nil
	}
	cidrs := map[string]string{}
	for _, o := range env.Hosts(env.Inv.Hosts) {
		cidrs[o.Name] = env.podCIDR(o)
	}
	if cidrs[h.Name] == "" {
		// Not planned (IPv6 or a custom mask): the controller manager allocated them.
		nodes, err := env.Kube.CoreV1().Nodes().List(ctx, metav1.ListOptions{})
		if err != nil {
			return fmt.Errorf("list nodes: %w", err)
		}
		for _, n := range nodes.Items {
			cidrs[n.Name] = n.Spec.PodCIDR
		}
	}
	own := cidrs[h.Name]
	if own == "" {
		// The controller manager has not allocated it yet: a later pass of this step configures it.
		h.Log.Info("pod network deferred", "reason", "no pod CIDR yet")
		return nil
	}
	changed, err := push(ctx, h, podNetworkFiles(env, h, cidrs))
	if err != nil || plugin == inventory.CNIFlannel {
		return err
	}
	// Routes vanish when a host reboots; check they are in place, not only the files.
	check := "ip route show"
	out, err := h.Client.Run(ctx, check)
	if err != nil {
		return fmt.Errorf("read routes: %w", err)
	}
	missing := false
	for _, o := range env.Inv.Hosts {
		if c := cidrs[o.Name]; o.Name != h.Name && c != "" && !strings.Contains(out, c+" via "+o.NodeIP()) {
			missing = true
		}
	}
	if len(changed) == 0 && !missing {
		return nil
	}
	cmd := "sh " + routesPath
	for _, c := range changed {
		if strings.HasSuffix(c, ".service") {
			// The unit only sets the routes at boot (this run sets them itself), so systemd
			// needs no reload for it, unless it has an older copy of the unit loaded.
			cmd = "systemctl --no-reload enable -q kubeforge-routes.service && " +
				"{ [ \"$(systemctl show -p NeedDaemonReload --value kubeforge-routes.service)\" != yes ] || systemctl daemon-reload; } && " + cmd
		}
	}
	if _, err := h.Client.Run(ctx, cmd); err != nil {
		return fmt.Errorf("set pod routes: %w", err)
	}
	if missing {
		h.Changed(Change{Kind: ChangeHost, What: "set pod routes"})
	}
	return nil
}
