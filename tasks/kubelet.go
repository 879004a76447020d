package tasks

import (
	"context"
	"fmt"
	"strings"
)

// kubeletInputs are the paths whose change needs a kubelet restart.
var kubeletInputs = []string{
	"/usr/bin/kubelet", "/var/lib/kubelet/", "/usr/lib/systemd/system/kubelet.service",
	"/etc/kubernetes/kubelet.conf", "/etc/kubernetes/bootstrap-kubelet.conf", "/etc/kubernetes/pki/ca.crt",
}

// startKubelet enables kubelet and (re)starts it when one of its inputs
// changed in this run or it is not running. It does nothing otherwise.
func startKubelet(ctx context.Context, h *Host) error {
	var unit, restart bool
	for _, c := range h.Changes() {
		p := strings.TrimPrefix(c, "wrote ")
		if strings.HasPrefix(p, "/usr/lib/systemd/system/kubelet") {
			unit = true
		}
		for _, in := range kubeletInputs {
			if strings.HasPrefix(p, in) {
				restart = true
			}
		}
	}
	active := h.Facts != nil && h.Facts.KubeletActive
	if !restart && active {
		h.Log.Info("unchanged", "what", "kubelet")
		return nil
	}
	cmd := "systemctl enable kubelet -q && systemctl restart kubelet"
	if unit {
		cmd = "systemctl daemon-reload && " + cmd
	}
	if _, err := h.Client.Run(ctx, cmd); err != nil {
		return fmt.Errorf("start kubelet: %w", err)
	}
	h.Changed("started kubelet")
	if h.Facts != nil {
		h.Facts.KubeletActive = true
	}
	return nil
}
