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
	return bridgeConflist(podCIDR, 0, true)
}

// FlannelCNI is the node's pod network config under flannel: the same bridge
// and addresses as BridgeCNI, with the pods' MTU mtu (the overlay's: the node
// link's MTU less VXLAN's 50 bytes, what flanneld gives flannel.1) and no IP
// masquerade of its own (flanneld masquerades what leaves the pod network).
// flannel's own CNI plugin would write the same from /run/flannel/subnet.env;
// kubeforge writes it, so a node is Ready with a config before flanneld runs.
func FlannelCNI(podCIDR string, mtu int) nodefile.File {
	return bridgeConflist(podCIDR, mtu, false)
}

// OverlayMTU is the pods' MTU on a VXLAN overlay over a link of MTU link
// (flannel's vxlan backend: 50 bytes of outer Ethernet, IPv4, UDP and VXLAN
// headers); 1450 when the link's MTU is unknown (0).
func OverlayMTU(link int) int {
	if link <= 0 {
		link = 1500
	}
	return link - 50
}

func bridgeConflist(podCIDR string, mtu int, ipMasq bool) nodefile.File {
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
	bridge := map[string]any{
		"type":        "bridge",
		"bridge":      "cni0",
		"isGateway":   true,
		"ipMasq":      ipMasq,
		"hairpinMode": true,
		"ipam": map[string]any{
			"type":   "host-local",
			"ranges": [][]rng{{{Subnet: subnet}}},
			"routes": []route{{Dst: dst}},
		},
	}
	if mtu > 0 {
		bridge["mtu"] = mtu
	}
	conf := map[string]any{
		"cniVersion": "1.0.0",
		"name":       "kubeforge",
		"plugins": []any{
			bridge,
			map[string]any{
				"type":         "portmap",
				"capabilities": map[string]bool{"portMappings": true},
			},
		},
	}
	data, _ := json.MarshalIndent(conf, "", "  ") // plain maps and strings: cannot fail
	return nodefile.File{Path: CNIConfigPath, Mode: 0o644, Data: append(data, '\n')}
}
