package tasks

import (
	"context"
	"fmt"

	"github.com/kubeforge/kubeforge/internal/nodefile"
)

// kernelSettings are the sysctls and modules every node needs.
var kernelSettings = []nodefile.File{
	{Path: "/etc/sysctl.d/99-kubeforge.conf", Mode: 0o644, Data: []byte(
		"# Written by kubeforge: settings Kubernetes networking needs.\n" +
			"net.ipv4.ip_forward = 1\n" +
			"net.bridge.bridge-nf-call-iptables = 1\n" +
			"net.bridge.bridge-nf-call-ip6tables = 1\n")},
	{Path: "/etc/modules-load.d/kubeforge.conf", Mode: 0o644, Data: []byte("overlay\nbr_netfilter\n")},
}

// PrepareNode sets the kernel settings Kubernetes needs, persistently, and
// applies them now when they changed or are not in effect.
func PrepareNode(ctx context.Context, env *Env, h *Host) error {
	changed, err := push(ctx, h, kernelSettings)
	if err != nil {
		return err
	}
	if len(changed) == 0 && h.Facts != nil && h.Facts.IPForward {
		return nil
	}
	// Modules may be built in (or unloadable in a container): a failed modprobe is not an error.
	_, err = h.Client.Run(ctx, "modprobe -a overlay br_netfilter 2>/dev/null; sysctl -q -p /etc/sysctl.d/99-kubeforge.conf")
	if err != nil {
		return fmt.Errorf("apply sysctls: %w", err)
	}
	return nil
}
