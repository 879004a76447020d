package manifests

import (
	"encoding/json"
	"net"

	"github.com/kubeforge/kubeforge/internal/nodefile"
)

// BridgeCNI is the built-in pod network config for a node with pod range podCIDR:
// /etc/cni/net.d/10-kubeforge.conflist, a bridge (cni0, gateway, IP masquerade,
// hairpin) with host-local addresses from podCIDR and a default route, chained
// with portmap. cniVersion 1.0.0 (Debian bookworm's containernetworking-plugins
// 1.1.1 supports it). Routes between nodes' pod ranges are set up separately.
// podCIDR comes from the Node object; it is written as given when it does not parse.
func BridgeCNI(podCIDR string) nodefile.File {
	subnet, dst := podCIDR, "0.0.0.0/0"
	if ip, n, err := net.ParseCIDR(podCIDR); err == nil {
		subnet = n.String()
		if ip.To4() == nil {
			dst = "::/0"
		}
	}
	type rng struct {
		Subnet string `json:"subnet"`
	}
	type route struct {
		Dst string `json:"dst"`
	}
	conf := map[string]any{
		"cniVersion": "1.0.0",
		"name":       "kubeforge",
		"plugins": []any{
			map[string]any{
				"type":        "bridge",
				"bridge":      "cni0",
				"isGateway":   true,
				"ipMasq":      true,
				"hairpinMode": true,
				"ipam": map[string]any{
					"type":   "host-local",
					"ranges": [][]rng{{{Subnet: subnet}}},
					"routes": []route{{Dst: dst}},
				},
			},
			map[string]any{
				"type":         "portmap",
				"capabilities": map[string]bool{"portMappings": true},
			},
		},
	}
	data, _ := json.MarshalIndent(conf, "", "  ") // plain maps and strings: cannot fail
	return nodefile.File{Path: CNIConfigPath, Mode: 0o644, Data: append(data, '\n')}
}
