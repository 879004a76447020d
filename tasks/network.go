package tasks

import (
	"context"
	"fmt"
	"sort"
	"strings"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/kubeforge/kubeforge/internal/nodefile"
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

// podNetworkFiles are h's bridge CNI config for its own pod CIDR and the
// routes script to every other node's pod CIDR, with its boot unit.
func podNetworkFiles(env *Env, h *Host, cidrs map[string]string) []nodefile.File {
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

// PodNetwork sets up the built-in pod network on a host: the bridge CNI config
// for its own pod CIDR and a route to every other node's pod CIDR through that
// node's address, kept in a boot-time unit. With cni.plugin "manifest" it does nothing.
func PodNetwork(ctx context.Context, env *Env, h *Host) error {
	if env.Inv.Cluster.CNI.Plugin == "manifest" {
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
	if err != nil {
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
