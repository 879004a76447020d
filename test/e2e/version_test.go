//go:build e2e

package e2e

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	k8sversion "k8s.io/apimachinery/pkg/util/version"

	"github.com/kubeforge/kubeforge/manifests"
	"github.com/kubeforge/kubeforge/test/harnesslib"
)

// smokeHarness is the instance and subnet of one version's smoke: "kfv35" on
// 172.30.35.0/24 for v1.35, so two versions' smokes never share a network
// (and no other test uses 172.30.0.0/16).
func smokeHarness(version string) (prefix, subnet string, err error) {
	v, err := k8sversion.ParseGeneric(version)
	if err != nil {
		return "", "", fmt.Errorf("parse the artifacts' version %q: %w", version, err)
	}
	return fmt.Sprintf("kfv%d", v.Minor()), fmt.Sprintf("172.30.%d.0/24", v.Minor()), nil
}

// TestVersionSmoke brings up 1 control plane + 1 worker from the artifacts
// directory KUBEFORGE_SMOKE_ARTIFACTS names (any version that has a build
// recipe; `make e2e-version-smoke K8S_VERSION=v1.35.4`) and checks that both
// nodes are Ready and run that version's kubelet, and that the control plane
// runs its images. Skipped without the variable.
func TestVersionSmoke(t *testing.T) {
	artifacts := os.Getenv("KUBEFORGE_SMOKE_ARTIFACTS")
	if artifacts == "" {
		t.Skip("KUBEFORGE_SMOKE_ARTIFACTS is not set (make e2e-version-smoke)")
	}
	b, err := os.ReadFile(filepath.Join(artifacts, "VERSION"))
	if err != nil {
		t.Fatalf("read the artifacts' version: %v", err)
	}
	version := strings.TrimSpace(string(b))
	prefix, subnet, err := smokeHarness(version)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Minute)
	defer cancel()
	c, state := startCluster(ctx, t, prefix, subnet, 2, 1, func(o *harnesslib.Options) { o.Artifacts = artifacts })

	start := time.Now()
	mustUp(ctx, t, c, state)
	t.Logf("Kubernetes %s: up 1+1 took %s", version, time.Since(start).Round(time.Millisecond))

	kc := clientFor(t, state)
	ready, versions := readyNodes(ctx, kc), nodeVersions(ctx, t, kc)
	if len(versions) != 2 {
		t.Fatalf("nodes %v; want 2", versions)
	}
	for name, v := range versions {
		if !ready[name] {
			t.Errorf("node %s not Ready", name)
		}
		if v != version {
			t.Errorf("node %s runs kubelet %s; want %s", name, v, version)
		}
	}
	sv, err := kc.Discovery().ServerVersion()
	if err != nil {
		t.Fatal(err)
	}
	if sv.GitVersion != version {
		t.Errorf("API server reports %s; want %s", sv.GitVersion, version)
	}
	// The add-ons run, CoreDNS from the image this version's kubeadm pins (the artifacts hold no other).
	want := "registry.k8s.io/coredns/coredns:" + manifests.PinsFor(version).CoreDNS
	for _, p := range waitPodsRunning(ctx, t, kc, "kube-system", "k8s-app=kube-dns", 2) {
		if got := p.Spec.Containers[0].Image; got != want {
			t.Errorf("CoreDNS pod %s runs %s; want %s", p.Name, got, want)
		}
	}
}
