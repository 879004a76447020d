//go:build e2e

package e2e

import (
	"bytes"
	"context"
	"encoding/base64"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/bcrypt"
	"gopkg.in/yaml.v3"
	"k8s.io/apimachinery/pkg/util/wait"

	"github.com/kubeforge/kubeforge/conformance"
	"github.com/kubeforge/kubeforge/test/harnesslib"
)

// conformanceShape is one cluster the suite runs on.
type conformanceShape struct {
	name, prefix, subnet string
	nodes, cps           int
	opts                 []func(*harnesslib.Options)
}

var conformanceShapes = []conformanceShape{
	{name: "1cp-2w", prefix: "kfconf", subnet: "172.31.212.0/24", nodes: 3, cps: 1},
	// HA: three control planes, two workers, the node-local API proxy (the default without a
	// controlPlaneEndpoint).
	{name: "3cp-2w", prefix: "kfconfha", subnet: "172.31.211.0/24", nodes: 5, cps: 3},
}

// The CI subset (about 20 specs, a few minutes): Services (ClusterIP, multiport, NodePort, the API's own
// Service), DNS, pod-to-pod on a node and across nodes, pods, EnvFrom (the busybox the bundle builds), apps.
const conformanceSubsetFocus = `\[sig-network\] Services should (serve a basic endpoint from pods|serve multiport endpoints from pods|be able to create a functioning NodePort service|provide secure master service)` +
	`|\[sig-network\] DNS should provide DNS for (services|the cluster|pods for Hostname)` +
	`|\[sig-network\] Networking Granular Checks: Pods should function for (intra|node)-pod communication` +
	`|\[sig-node\] Pods should (get a host IP|be submitted and removed|support remote command execution over websockets)` +
	`|\[sig-node\] (Secrets|ConfigMap) should be consumable via the environment` +
	`|\[sig-apps\] (Deployment (deployment should support rollover|RollingUpdateDeployment should delete old pods and create new ones)|ReplicaSet should serve a basic image on each replica)`

// TestConformance runs Kubernetes' conformance suite (the bundle of `make conformance-bundle`) with
// `kubeforge conformance` on clusters made by `kubeforge up`, offline: the test images come through a registry
// mirror in cluster.registries, a CNCF distribution registry on this machine (TLS from a test CA, basic auth,
// read-only) serving the bundle's registry/ at the harness network's gateway.
//
// KUBEFORGE_CONFORMANCE selects: "subset" (CI: the network, DNS, Services, pods and apps specs on 1+2),
// "full" (every [Conformance] spec on 1+2, then on 3+2 HA), or a shape name for the full suite on it alone.
// KUBEFORGE_CONFORMANCE_PROCS sets ginkgo's processes for the parallel phase (6).
// Reports go to KUBEFORGE_CONFORMANCE_REPORTS (default .cache/conformance-reports)/<shape>[-subset].
func TestConformance(t *testing.T) {
	mode := os.Getenv("KUBEFORGE_CONFORMANCE")
	if mode == "" {
		t.Skip("KUBEFORGE_CONFORMANCE is not set (make conformance, make e2e-conformance-subset)")
	}
	bundle, err := conformance.LoadBundle(ArtifactsDir(t))
	if err != nil {
		t.Fatal(err)
	}
	reports := os.Getenv("KUBEFORGE_CONFORMANCE_REPORTS")
	if reports == "" {
		reports = filepath.Join(RepoRoot(t), ".cache", "conformance-reports")
	}
	for _, shape := range conformanceShapes {
		focus := ""
		switch {
		case mode == "subset" && shape.name == "1cp-2w":
			focus = conformanceSubsetFocus
		case mode == "full" || mode == shape.name:
		default:
			continue
		}
		dir := filepath.Join(reports, shape.name)
		if focus != "" {
			dir += "-subset" // never over a full run's reports
		}
		t.Run(shape.name, func(t *testing.T) {
			runConformance(t, bundle, shape, focus, dir)
		})
	}
}

func runConformance(t *testing.T, bundle *conformance.Bundle, shape conformanceShape, focus, reportDir string) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Hour)
	defer cancel()
	c, state := startCluster(ctx, t, shape.prefix, shape.subnet, shape.nodes, shape.cps, shape.opts...)

	pass := randomHex(t, 16)
	const user, credsEnv = "conformance", "KF_E2E_CONFORMANCE_MIRROR"
	secrets := []string{pass, base64.StdEncoding.EncodeToString([]byte(user + ":" + pass))}
	mirror, caPEM := serveBundleRegistry(ctx, t, c, bundle, user, pass)
	caFile := filepath.Join(c.Dir, "conformance-mirror-ca.crt")
	if err := os.WriteFile(caFile, caPEM, 0o644); err != nil {
		t.Fatal(err)
	}
	inv := rewriteInventory(t, c.Inventory, filepath.Join(c.Dir, "inventory-conformance.yaml"), func(root *yaml.Node) {
		var regs yaml.Node
		if err := regs.Encode(map[string]any{"registry.k8s.io": map[string]any{"mirrors": []any{map[string]any{
			"url": mirror, "ca": caFile, "credentials": map[string]string{"env": credsEnv},
		}}}}); err != nil {
			t.Fatal(err)
		}
		cluster := mapValue(root, "cluster")
		cluster.Content = append(cluster.Content, &yaml.Node{Kind: yaml.ScalarNode, Value: "registries"}, &regs)
	})
	env := []string{credsEnv + "=" + user + ":" + pass}
	start := time.Now()
	if code, _ := kubeforgeWith(ctx, t, env, secrets, "up", "-i", inv, "--state-dir", state); code != 0 {
		t.Fatalf("kubeforge up exited %d", code)
	}
	t.Logf("the %s cluster is up in %s", shape.name, time.Since(start).Round(time.Second))

	if err := os.RemoveAll(reportDir); err != nil {
		t.Fatal(err)
	}
	procs := os.Getenv("KUBEFORGE_CONFORMANCE_PROCS")
	if procs == "" {
		procs = "6"
	}
	args := []string{"conformance", "-i", inv, "--state-dir", state, "--report-dir", reportDir, "--procs", procs}
	if focus != "" {
		args = append(args, "--focus", focus)
	}
	code, out := runStreaming(ctx, t, env, secrets, args...)
	if !strings.Contains(out, "conformance: bundle "+bundle.Version) {
		t.Fatalf("kubeforge conformance did not pass its checks (exit %d)", code)
	}
	if err := os.WriteFile(filepath.Join(reportDir, "summary.txt"), []byte(out[strings.LastIndex(out, "\n\n")+1:]), 0o644); err != nil {
		t.Fatal(err)
	}
	if code != 0 {
		t.Errorf("kubeforge conformance exited %d: specs failed (summary above; JUnit in %s)", code, reportDir)
	}
	if !strings.Contains(out, " 0 failed") && code == 0 {
		t.Errorf("kubeforge conformance exited 0 without a summary")
	}
}

// runStreaming runs kubeforge with its output going to the test log line by line as it comes (a conformance
// run takes an hour), and returns its exit code and whole output.
func runStreaming(ctx context.Context, t *testing.T, env, secrets []string, args ...string) (int, string) {
	t.Helper()
	cmd := exec.CommandContext(ctx, kubeforgeBin(t), args...)
	cmd.Env = append(os.Environ(), env...)
	pr, pw := io.Pipe()
	cmd.Stdout, cmd.Stderr = pw, pw
	var all bytes.Buffer
	done := make(chan struct{})
	go func() {
		defer close(done)
		buf := make([]byte, 64*1024)
		var line []byte
		for {
			n, err := pr.Read(buf)
			all.Write(buf[:n])
			line = append(line, buf[:n]...)
			for {
				i := bytes.IndexByte(line, '\n')
				if i < 0 {
					break
				}
				s := string(line[:i])
				for _, sec := range secrets {
					s = strings.ReplaceAll(s, sec, "<secret>")
				}
				fmt.Fprintf(os.Stderr, "    | %s\n", s)
				line = line[i+1:]
			}
			if err != nil {
				return
			}
		}
	}()
	err := cmd.Run()
	pw.Close()
	<-done
	out := all.String()
	for i, s := range secrets {
		if strings.Contains(out, s) {
			t.Errorf("kubeforge %s printed secret #%d", args[0], i)
		}
	}
	if ee, ok := err.(*exec.ExitError); ok {
		return ee.ExitCode(), out
	}
	if err != nil {
		t.Fatalf("run kubeforge: %v", err)
	}
	return 0, out
}

// serveBundleRegistry starts the distribution registry on this machine, at the harness network's gateway, serving
// the bundle's registry/ read-only with TLS and basic auth; it returns the mirror's URL and its CA.
func serveBundleRegistry(ctx context.Context, t *testing.T, c *harnesslib.Cluster, bundle *conformance.Bundle, user, pass string) (string, []byte) {
	t.Helper()
	caPEM, certPEM, keyPEM := registryPKI(t, c.Gateway)
	hash, err := bcrypt.GenerateFromPassword([]byte(pass), bcrypt.DefaultCost)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	l, err := net.Listen("tcp", net.JoinHostPort(c.Gateway, "0"))
	if err != nil {
		t.Fatalf("listen on the harness gateway %s: %v", c.Gateway, err)
	}
	addr := l.Addr().String()
	l.Close()
	config := registryConfig(filepath.Join(bundle.Dir, "registry"), addr, dir, true)
	for name, data := range map[string][]byte{"config.yml": []byte(config), "tls.crt": certPEM, "tls.key": keyPEM,
		"htpasswd": []byte(user + ":" + string(hash) + "\n")} {
		if err := os.WriteFile(filepath.Join(dir, name), data, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	cmd := exec.Command(registryBinary(t), "serve", filepath.Join(dir, "config.yml"))
	logf, err := os.Create(filepath.Join(dir, "registry.log"))
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		logf.Close()
	})
	client := registryClient(t, caPEM)
	url := "https://" + addr
	err = wait.PollUntilContextTimeout(ctx, 200*time.Millisecond, 30*time.Second, true, func(ctx context.Context) (bool, error) {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, url+"/v2/", nil)
		if err != nil {
			return false, err
		}
		req.SetBasicAuth(user, pass)
		resp, err := client.Do(req)
		if err != nil {
			return false, nil // not listening yet
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK, nil
	})
	if err != nil {
		log, _ := os.ReadFile(filepath.Join(dir, "registry.log"))
		t.Fatalf("the conformance registry at %s does not answer: %v\n%s", url, err, log)
	}
	return url, caPEM
}
