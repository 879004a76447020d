package conformance

import (
	"context"
	"encoding/base64"
	"encoding/pem"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/version"
	fakediscovery "k8s.io/client-go/discovery/fake"
	"k8s.io/client-go/kubernetes/fake"

	"github.com/kubeforge/kubeforge/inventory"
)

func writeBundle(t *testing.T, version string, images ...string) string {
	t.Helper()
	art := t.TempDir()
	bin := filepath.Join(art, BundleDir, "bin")
	if err := os.MkdirAll(bin, 0o755); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{"e2e.test", "ginkgo", "kubectl"} {
		if err := os.WriteFile(filepath.Join(bin, p), []byte("#!/bin/sh\n"), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	must(t, os.WriteFile(filepath.Join(art, BundleDir, "VERSION"), []byte(version+"\n"), 0o644))
	must(t, os.WriteFile(filepath.Join(art, BundleDir, "images.txt"), []byte("# images\n"+strings.Join(images, "\n")+"\n"), 0o644))
	return art
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func TestLoadBundle(t *testing.T) {
	art := writeBundle(t, "v1.37.2", "registry.k8s.io/e2e-test-images/agnhost:2.66.1", "registry.k8s.io/pause:3.10.2")
	b, err := LoadBundle(art)
	if err != nil {
		t.Fatal(err)
	}
	if b.Version != "v1.37.2" || len(b.Images) != 2 || b.Images[1] != "registry.k8s.io/pause:3.10.2" {
		t.Errorf("bundle %+v", b)
	}

	for name, tc := range map[string]struct {
		edit func(art string)
		want string
	}{
		"no bundle":      {func(art string) { os.RemoveAll(filepath.Join(art, BundleDir)) }, "no conformance bundle"},
		"no ginkgo":      {func(art string) { os.Remove(filepath.Join(art, BundleDir, "bin", "ginkgo")) }, "bin/ginkgo is missing"},
		"not executable": {func(art string) { os.Chmod(filepath.Join(art, BundleDir, "bin", "e2e.test"), 0o644) }, "not executable"},
		"no version":     {func(art string) { os.Remove(filepath.Join(art, BundleDir, "VERSION")) }, "no VERSION"},
		"no images": {func(art string) {
			os.WriteFile(filepath.Join(art, BundleDir, "images.txt"), []byte("# none\n"), 0o644)
		}, "lists no images"},
	} {
		t.Run(name, func(t *testing.T) {
			art := writeBundle(t, "v1.37.2", "registry.k8s.io/pause:3.10.2")
			tc.edit(art)
			_, err := LoadBundle(art)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("LoadBundle: %v; want an error containing %q", err, tc.want)
			}
		})
	}
	if _, err := LoadBundle(""); err == nil || !strings.Contains(err.Error(), "cluster.artifacts") {
		t.Errorf("LoadBundle(\"\"): %v", err)
	}
}

func node(name string, ready bool, taints ...corev1.Taint) *corev1.Node {
	st := corev1.ConditionFalse
	if ready {
		st = corev1.ConditionTrue
	}
	return &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name}, Spec: corev1.NodeSpec{Taints: taints},
		Status: corev1.NodeStatus{Conditions: []corev1.NodeCondition{{Type: corev1.NodeReady, Status: st}}}}
}

// registry answers HEAD /v2/<repo>/manifests/<tag> with 200 for the images it has, 401 without the credentials.
func registry(t *testing.T, auth string, has ...string) (*httptest.Server, []byte) {
	t.Helper()
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Authorization") != "Basic "+base64.StdEncoding.EncodeToString([]byte(auth)) {
			w.WriteHeader(http.StatusUnauthorized)
			return
		}
		for _, h := range has {
			repo, tag, _ := strings.Cut(h, ":")
			if r.Method == http.MethodHead && r.URL.Path == "/v2/"+repo+"/manifests/"+tag {
				w.WriteHeader(http.StatusOK)
				return
			}
		}
		w.WriteHeader(http.StatusNotFound)
	}))
	t.Cleanup(srv.Close)
	ca := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw})
	return srv, ca
}

func TestCheck(t *testing.T) {
	const agnhost, pause = "registry.k8s.io/e2e-test-images/agnhost:2.66.1", "registry.k8s.io/pause:3.10.2"
	srv, ca := registry(t, "u:p", "e2e-test-images/agnhost:2.66.1", "pause:3.10.2")
	b := &Bundle{Version: "v1.37.2", Images: []string{agnhost, pause}}
	inv := func(auth string, ca []byte) *inventory.Inventory {
		return &inventory.Inventory{Cluster: inventory.Cluster{Registries: map[string]inventory.Registry{
			"registry.k8s.io": {Mirrors: []inventory.Mirror{{URL: srv.URL, CAData: ca, Auth: auth}}}}}}
	}
	cp := corev1.Taint{Key: "node-role.kubernetes.io/control-plane", Effect: corev1.TaintEffectNoSchedule}
	client := func(v string, nodes ...*corev1.Node) *fake.Clientset {
		objs := []runtime.Object{}
		for _, n := range nodes {
			objs = append(objs, n)
		}
		kc := fake.NewClientset(objs...)
		kc.Discovery().(*fakediscovery.FakeDiscovery).FakedServerVersion = &version.Info{GitVersion: v}
		return kc
	}
	ctx := context.Background()

	if p := Check(ctx, b, inv("u:p", ca), client("v1.37.2", node("cp", true, cp), node("w1", true), node("w2", true))); len(p) != 0 {
		t.Errorf("a ready cluster whose mirror has every image: %v", p)
	}
	for name, tc := range map[string]struct {
		inv  *inventory.Inventory
		kc   *fake.Clientset
		want []string
	}{
		"another version": {inv("u:p", ca), client("v1.36.3", node("w1", true), node("w2", true)), []string{"runs Kubernetes v1.36.3 and the bundle is v1.37.2"}},
		"one schedulable node": {inv("u:p", ca), client("v1.37.2", node("cp", true, cp), node("w1", true), node("w2", false)),
			[]string{"1 schedulable Ready node(s) (w1)"}},
		"wrong credentials": {inv("u:x", ca), client("v1.37.2", node("w1", true), node("w2", true)),
			[]string{"2 images (" + agnhost + ", " + pause + "): no mirror serves it (" + srv.URL + ": HTTP 401)"}},
		"unknown CA": {inv("u:p", nil), client("v1.37.2", node("w1", true), node("w2", true)), []string{"certificate"}},
		"no mirror": {&inventory.Inventory{}, client("v1.37.2", node("w1", true), node("w2", true)),
			[]string{"2 images (" + agnhost + ", " + pause + "): no mirror of registry.k8s.io in cluster.registries"}},
	} {
		t.Run(name, func(t *testing.T) {
			got := Check(ctx, b, tc.inv, tc.kc)
			text := ""
			for _, p := range got {
				text += p.String() + "\n"
			}
			for _, w := range tc.want {
				if !strings.Contains(text, w) {
					t.Errorf("problems:\n%s\nwant one containing %q", text, w)
				}
			}
			if strings.Contains(text, "u:p") || strings.Contains(text, "u:x") {
				t.Errorf("a problem shows the credentials:\n%s", text)
			}
		})
	}

	missing := &Bundle{Version: "v1.37.2", Images: []string{"registry.k8s.io/e2e-test-images/nginx:1.27.0-2"}}
	got := Check(ctx, missing, inv("u:p", ca), client("v1.37.2", node("w1", true), node("w2", true)))
	if len(got) != 1 || got[0].What != "registry.k8s.io/e2e-test-images/nginx:1.27.0-2: no mirror serves it ("+srv.URL+": HTTP 404)" {
		t.Errorf("an image the mirror lacks: %v", got)
	}
	untagged := &Bundle{Version: "v1.37.2", Images: []string{"registry.k8s.io/pause", agnhost, "Not//A/Name:x"}}
	got = Check(ctx, untagged, inv("u:p", ca), client("v1.37.2", node("w1", true), node("w2", true)))
	if len(got) != 2 || got[0].What != "registry.k8s.io/pause: no tag in images.txt" || !strings.Contains(got[1].What, "Not//A/Name:x: not an image reference") {
		t.Errorf("bad images.txt entries: %v", got)
	}
}

func TestReadJUnitAndSummary(t *testing.T) {
	report := `<?xml version="1.0" encoding="UTF-8"?>
<testsuites tests="5" disabled="0" errors="0" failures="1" time="12">
  <testsuite name="Kubernetes e2e suite" package="/" tests="5">
    <testcase name="[SynchronizedBeforeSuite]" classname="Kubernetes e2e suite" status="passed" time="1"></testcase>
    <testcase name="[sig-network] DNS should provide DNS for services  [Conformance]" status="passed" time="3"></testcase>
    <testcase name="[sig-apps] Deployment deployment should support rollover [Conformance]" status="failed" time="5">
      <failure message="Timed out after 300s.&#xA;pods not ready" type="failed">[FAILED] Timed out</failure>
    </testcase>
    <testcase name="[sig-storage] CSI something" status="skipped" time="0"><skipped message="skipped"></skipped></testcase>
    <testcase name="[ReportAfterSuite] Kubernetes e2e suite report" status="passed" time="0"></testcase>
  </testsuite>
</testsuites>`
	path := filepath.Join(t.TempDir(), "junit.xml")
	must(t, os.WriteFile(path, []byte(report), 0o644))
	p, err := readJUnit(path)
	if err != nil {
		t.Fatal(err)
	}
	if p.Passed != 1 || p.Failed != 1 || p.Skipped != 1 {
		t.Errorf("passed %d failed %d skipped %d; want 1 1 1", p.Passed, p.Failed, p.Skipped)
	}
	if len(p.Failures) != 1 || p.Failures[0].Message != "Timed out after 300s. pods not ready" || !strings.Contains(p.Failures[0].Spec, "rollover") {
		t.Errorf("failures %+v", p.Failures)
	}
	if _, err := readJUnit(filepath.Join(t.TempDir(), "none.xml")); err == nil {
		t.Error("a missing report is not an error")
	}
	var sb strings.Builder
	p.Name = PhaseParallel
	(&Summary{Phases: []PhaseSummary{*p}}).Write(&sb)
	for _, w := range []string{"parallel     1 passed    1 failed", "FAILED [parallel] [sig-apps] Deployment", "conformance: 1 failed"} {
		if !strings.Contains(sb.String(), w) {
			t.Errorf("summary:\n%s\nwant %q", sb.String(), w)
		}
	}
}

func TestProgressFollowsGinkgo(t *testing.T) {
	out := "Running Suite: Kubernetes e2e suite\nWill run 4 of 7000 specs\n" +
		"SSSS•SS•\n" +
		"------------------------------\n• [FAILED] [300.1 seconds]\n[sig-apps] Deployment rollover\n" +
		"------------------------------\n•SSS\n" +
		"Ran 4 of 7000 Specs in 400 seconds\nFAIL! -- 3 Passed | 1 Failed\n"
	var sb strings.Builder
	p := &progress{w: &sb, phase: PhaseParallel}
	p.follow(strings.NewReader(out))
	if p.total != 4 || p.done != 4 || p.failed != 1 {
		t.Errorf("total %d done %d failed %d; want 4 4 1", p.total, p.done, p.failed)
	}
	if !strings.Contains(sb.String(), "conformance parallel: 4/4 specs done, 1 failed") {
		t.Errorf("progress:\n%s", sb.String())
	}
}
