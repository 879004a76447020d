package manifests

import (
	"net"
	"sort"
	"strconv"
	"strings"

	"github.com/kubeforge/kubeforge/internal/nodefile"
	"github.com/kubeforge/kubeforge/inventory"
)

// The node-local API proxy's files on a worker (docs/ha.md).
const (
	APIProxyBinaryPath    = "/usr/local/bin/kubeforge-apiproxy"
	APIProxyUnitPath      = "/etc/systemd/system/kubeforge-apiproxy.service"
	APIProxyUpstreamsPath = "/etc/kubeforge/apiproxy-upstreams"
	APIProxyUnit          = "kubeforge-apiproxy"
)

// apiProxyUnit runs the proxy before the kubelet; the binary is kubeforge's own.
var apiProxyUnit = `[Unit]
Description=kubeforge node-local API server proxy: 127.0.0.1:6443 to every healthy control plane
Documentation=https://github.com/kubeforge/kubeforge/blob/main/docs/ha.md
After=network-online.target
Wants=network-online.target
Before=kubelet.service

[Service]
ExecStart=` + APIProxyBinaryPath + ` apiproxy --listen ` + net.JoinHostPort(inventory.APIProxyHost, strconv.Itoa(inventory.DefaultAPIServerPort)) +
	` --upstreams ` + APIProxyUpstreamsPath + ` --ca /etc/kubernetes/pki/ca.crt
Restart=always
RestartSec=1
NoNewPrivileges=yes
ProtectHome=yes
PrivateTmp=yes

[Install]
WantedBy=multi-user.target
`

// APIProxyFiles are the proxy's unit and upstream list for worker h of a
// cluster that uses it (inv.UsesAPIProxy), else none. The list holds every
// control plane of the inventory; the proxy reads it again when it changes.
func APIProxyFiles(inv *inventory.Inventory, h *inventory.Host) []nodefile.File {
	if !inv.UsesAPIProxy() || h.IsControlPlane() {
		return nil
	}
	var ups []string
	for _, cp := range inv.ControlPlanes() {
		ups = append(ups, net.JoinHostPort(cp.NodeIP(), strconv.Itoa(inventory.DefaultAPIServerPort)))
	}
	sort.Strings(ups)
	list := "# kubeforge: the API servers the node-local proxy forwards to (rewritten when control planes change)\n" +
		strings.Join(ups, "\n") + "\n"
	return []nodefile.File{
		{Path: APIProxyUnitPath, Mode: 0o644, Data: []byte(apiProxyUnit)},
		{Path: APIProxyUpstreamsPath, Mode: 0o644, Data: []byte(list)},
	}
}
