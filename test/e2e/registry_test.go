//go:build e2e

package e2e

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"io/fs"
	"math/big"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/bcrypt"
	"gopkg.in/yaml.v3"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"

	"github.com/kubeforge/kubeforge/tasks"
	"github.com/kubeforge/kubeforge/test/harnesslib"
)

// The registry of TestRegistryMirror: the CNCF distribution registry (`make registry`) on a harness host that is
// not in the inventory, serving TLS from a test CA, with htpasswd (bcrypt) auth.
const (
	mirrorCredsEnv = "KF_E2E_MIRROR_CREDS"
	mirrorUser     = "kubeforge-e2e"
	mirrorPort     = "5000"
	mirrorRepo     = "kubeforge-e2e/only-in-mirror"
	mirrorTag      = "1.0"
	registryUnit   = "kf-e2e-registry"
	registryEtc    = "/etc/kf-e2e-registry"
)

// registryBinary is the registry `make registry` built: $KUBEFORGE_REGISTRY (its directory), else
// .cache/registry-v3.1.2.
func registryBinary(t testing.TB) string {
	t.Helper()
	dir := os.Getenv("KUBEFORGE_REGISTRY")
	if dir == "" {
		dir = filepath.Join(RepoRoot(t), ".cache", "registry-v3.1.2")
	}
	p := filepath.Join(dir, "registry")
	if _, err := os.Stat(p); err != nil {
		t.Fatalf("the registry is not built in %s (run `make registry`): %v", dir, err)
	}
	return p
}

// TestRegistryMirror: cluster.registries end to end. A 1+1 cluster made by `up` pulls an image that exists only
// in a real registry (TLS from a test CA, basic auth) through the mirror kubeforge configured: the CA and the
// credentials reach containerd, the credentials reach no log; wrong credentials are written without a
// containerd restart and the registry refuses the pull; a registry dropped from the inventory leaves the hosts.
//
// The upstream the image names is an address of the harness network where nothing listens: containerd tries
// the upstream after its mirrors, and a real name (registry.k8s.io) would send that attempt off this machine.
func TestRegistryMirror(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Minute)
	defer cancel()
	all, state := startCluster(ctx, t, "kfreg", "172.31.215.0/24", 3, 1)
	reg, _ := all.Node("node3") // the registry's host, not in the inventory
	cl := *all
	cl.Nodes = all.Nodes[:2]
	cl.Inventory = subsetInventory(t, all, "node1", "node2")
	c := &cl
	worker := c.Nodes[1]

	upstream := "172.31.215.99:" + mirrorPort
	mirrorURL := "https://" + reg.Address + ":" + mirrorPort
	image := upstream + "/" + mirrorRepo + ":" + mirrorTag
	hostsDir := "/etc/containerd/certs.d/" + upstream
	hostsToml := hostsDir + "/hosts.toml"
	caOnNode := hostsDir + "/" + reg.Address + "_" + mirrorPort + "/ca.crt"
	const marker = "/var/lib/kubeforge/registries"

	pass, wrongPass := randomHex(t, 16), randomHex(t, 16)
	creds, wrong := mirrorUser+":"+pass, mirrorUser+":"+wrongPass
	// What must never be printed or logged: the passwords and the headers that carry them.
	secrets := []string{pass, wrongPass, base64.StdEncoding.EncodeToString([]byte(creds)), base64.StdEncoding.EncodeToString([]byte(wrong))}

	caPEM := startRegistry(ctx, t, all, reg, pass)
	client := registryClient(t, caPEM)
	t.Run("the registry enforces its credentials", func(t *testing.T) {
		for _, tc := range []struct {
			name, user, pass string
			want             int
		}{{"none", "", "", http.StatusUnauthorized}, {"wrong", mirrorUser, wrongPass, http.StatusUnauthorized}, {"right", mirrorUser, pass, http.StatusOK}} {
			if got := registryStatus(ctx, t, client, mirrorURL+"/v2/", tc.user, tc.pass); got != tc.want {
				t.Errorf("GET /v2/ with %s credentials: %d; want %d", tc.name, got, tc.want)
			}
		}
	})
	digest := pushOnlyInMirror(ctx, t, client, mirrorURL, pass)
	t.Logf("pushed %s to the mirror as %s", mirrorRepo+":"+mirrorTag, digest)

	caFile := filepath.Join(c.Dir, "mirror-ca.crt")
	if err := os.WriteFile(caFile, caPEM, 0o644); err != nil {
		t.Fatal(err)
	}
	base := c.Inventory
	withMirror := rewriteInventory(t, base, filepath.Join(c.Dir, "inventory-registries.yaml"), func(root *yaml.Node) {
		var regs yaml.Node
		if err := regs.Encode(map[string]any{upstream: map[string]any{"mirrors": []any{map[string]any{
			"url": mirrorURL, "ca": caFile, "credentials": map[string]string{"env": mirrorCredsEnv},
		}}}}); err != nil {
			t.Fatal(err)
		}
		cluster := mapValue(root, "cluster")
		cluster.Content = append(cluster.Content, &yaml.Node{Kind: yaml.ScalarNode, Value: "registries"}, &regs)
	})
	env := func(v string) []string { return []string{mirrorCredsEnv + "=" + v} }
	run := func(cmdEnv []string, inv string, args ...string) (int, string) {
		t.Helper()
		return kubeforgeWith(ctx, t, cmdEnv, secrets, append([]string{"up", "-i", inv, "--state-dir", state}, args...)...)
	}
	plan := func(cmdEnv []string, inv string) *tasks.Plan {
		t.Helper()
		code, out := run(cmdEnv, inv, "--dry-run", "--output", "json")
		p := planOf(out)
		if code != 0 || p == nil {
			t.Fatalf("up --dry-run exited %d, plan %v", code, p != nil)
		}
		return p
	}
	up := func(cmdEnv []string, inv string) string {
		t.Helper()
		code, out := run(cmdEnv, inv)
		if code != 0 {
			t.Fatalf("up exited %d", code)
		}
		return out
	}

	p := plan(env(creds), withMirror)
	for _, n := range c.Nodes {
		files := planFiles(p, n.Name)
		for _, want := range []string{hostsToml, caOnNode, marker} {
			if _, ok := files[want]; !ok {
				t.Errorf("up --dry-run: %s's plan lacks %s: %v", n.Name, want, files)
			}
		}
	}
	start := time.Now()
	up(env(creds), withMirror)
	t.Logf("first up: %s", time.Since(start).Round(time.Second))
	planMatchesChanges(t, p, lastChanges(t, state))
	checkWhole(ctx, t, c, state, 1)

	t.Run("the hosts files are private and hold no plaintext password", func(t *testing.T) {
		for _, n := range c.Nodes {
			if got := MustSSH(ctx, t, c, n, "root", "stat -c '%a %U %G' "+hostsToml); got != "600 root root" {
				t.Errorf("%s: %s has mode and owner %q; want 600 root root", n.Name, hostsToml, got)
			}
			toml := MustSSH(ctx, t, c, n, "root", "cat "+hostsToml)
			if strings.Contains(toml, pass) {
				t.Errorf("%s: %s holds the password in plain text", n.Name, hostsToml)
			}
			if !strings.Contains(toml, `[host."`+mirrorURL+`"]`) || !strings.Contains(toml, "Authorization = [\"Basic ") ||
				!strings.Contains(toml, `ca = "`+caOnNode+`"`) {
				t.Errorf("%s: %s names no mirror, CA or Authorization header", n.Name, hostsToml)
			}
			if got := MustSSH(ctx, t, c, n, "root", "cat "+caOnNode); got != strings.TrimSpace(string(caPEM)) {
				t.Errorf("%s: %s is not the inventory's CA", n.Name, caOnNode)
			}
			if got := MustSSH(ctx, t, c, n, "root", "grep -c 'config_path = \"/etc/containerd/certs.d\"' /etc/containerd/config.toml || true"); got != "1" {
				t.Errorf("%s: containerd's config has no config_path for the hosts files", n.Name)
			}
		}
	})

	kc := clientFor(t, state)
	t.Run("a pod pulls the image that only the mirror has, with the CA and the credentials", func(t *testing.T) {
		if got := MustSSH(ctx, t, c, worker, "root", "ctr -n k8s.io images ls -q | grep -c only-in-mirror || true"); got != "0" {
			t.Fatalf("%s has the image before any pull", worker.Name)
		}
		pod := mirrorPod("mirror-pull", worker.Name, image)
		if _, err := kc.CoreV1().Pods("default").Create(ctx, pod, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		pods := waitPodsRunning(ctx, t, kc, "default", "kubeforge-e2e=mirror-pull", 1)
		if id := pods[0].Status.ContainerStatuses[0].ImageID; !strings.HasSuffix(id, "@"+digest) {
			t.Errorf("the pod runs image %s; want the pushed %s", id, digest)
		}
		if n := registryAccess(ctx, t, all, reg, worker.Address, "200"); n == 0 {
			t.Errorf("the registry's access log has no manifest request of %s answered 200", worker.Address)
		}
	})

	t.Run("a second up changes nothing", func(t *testing.T) {
		if out := up(env(creds), withMirror); !strings.Contains(out, "No changes: every host already matched the inventory.") {
			t.Errorf("second up reported changes")
		}
	})

	t.Run("wrong credentials: hosts.toml is rewritten, containerd keeps running, the pull is refused", func(t *testing.T) {
		started := map[string]string{}
		for _, n := range c.Nodes {
			started[n.Name] = MustSSH(ctx, t, c, n, "root", "systemctl show containerd -p ExecMainStartTimestamp")
		}
		p := plan(env(wrong), withMirror)
		for _, n := range c.Nodes {
			hp := planHost(p, n.Name)
			if hp == nil {
				t.Fatalf("no plan for %s", n.Name)
			}
			if files := planFiles(p, n.Name); files[hostsToml] != "content differs" || len(files) != 1 {
				t.Errorf("%s: the plan writes %v; want %s alone (content differs)", n.Name, files, hostsToml)
			}
			if len(hp.Restarts) != 0 {
				t.Errorf("%s: the plan restarts %+v; a hosts file restarts nothing", n.Name, hp.Restarts)
			}
		}
		up(env(wrong), withMirror)
		planMatchesChanges(t, p, lastChanges(t, state))
		for _, n := range c.Nodes {
			if got := MustSSH(ctx, t, c, n, "root", "systemctl show containerd -p ExecMainStartTimestamp"); got != started[n.Name] {
				t.Errorf("%s: containerd restarted (%s, then %s)", n.Name, started[n.Name], got)
			}
		}
		refused := registryAccess(ctx, t, all, reg, worker.Address, "401")
		pod := mirrorPod("mirror-denied", worker.Name, image)
		if _, err := kc.CoreV1().Pods("default").Create(ctx, pod, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		var reason, msg string
		err := wait.PollUntilContextTimeout(ctx, 2*time.Second, 3*time.Minute, true, func(ctx context.Context) (bool, error) {
			p, err := kc.CoreV1().Pods("default").Get(ctx, pod.Name, metav1.GetOptions{})
			if err != nil || len(p.Status.ContainerStatuses) == 0 {
				return false, nil
			}
			st := p.Status.ContainerStatuses[0].State
			if st.Running != nil {
				return false, fmt.Errorf("the pod runs: the pull with wrong credentials went through")
			}
			if st.Waiting != nil {
				reason, msg = st.Waiting.Reason, st.Waiting.Message
			}
			return reason == "ErrImagePull" || reason == "ImagePullBackOff", nil
		})
		if err != nil {
			t.Fatalf("pod with wrong mirror credentials: %v (last reason %q: %s)", err, reason, msg)
		}
		t.Logf("with wrong credentials: %s: %s", reason, msg)
		if n := registryAccess(ctx, t, all, reg, worker.Address, "401"); n <= refused {
			t.Errorf("the registry's access log has no new manifest request of %s answered 401", worker.Address)
		}
	})

	t.Run("a registry dropped from the inventory leaves the hosts", func(t *testing.T) {
		p := plan(nil, base)
		for _, n := range c.Nodes {
			var removed []string
			for f, why := range planFiles(p, n.Name) {
				if why == "removed: no longer in cluster.registries" {
					removed = append(removed, f)
				}
			}
			slices.Sort(removed)
			if want := []string{caOnNode, hostsToml}; !slices.Equal(removed, want) {
				t.Errorf("%s: up --dry-run removes %v; want %v", n.Name, removed, want)
			}
		}
		up(nil, base)
		changes := lastChanges(t, state)
		planMatchesChanges(t, p, changes)
		for _, n := range c.Nodes {
			// The run's record says what happened to each file: removed, not written.
			for _, f := range []string{hostsToml, caOnNode} {
				if !slices.Contains(changes[n.Name], tasks.Change{Kind: tasks.ChangeHost, What: "removed " + f}) ||
					slices.Contains(changes[n.Name], tasks.Change{Kind: tasks.ChangeFile, What: f}) {
					t.Errorf("%s: the run's changes %v do not record %s as removed (and only removed)", n.Name, changes[n.Name], f)
				}
			}
		}
		for _, n := range c.Nodes {
			got := MustSSH(ctx, t, c, n, "root", "test ! -e "+hostsDir+" && echo gone; wc -c < "+marker+"; ls -A /etc/containerd/certs.d 2>/dev/null | wc -l")
			if got != "gone\n0\n0" {
				t.Errorf("%s after the registry left the inventory: %s gone, marker bytes, entries left in certs.d: %q; want gone, 0, 0", n.Name, hostsDir, got)
			}
		}
		checkWhole(ctx, t, c, state, 1)
	})

	t.Run("no log holds the credentials", func(t *testing.T) {
		// kubeforgeWith checked every output of kubeforge; here every file of the state directory.
		err := filepath.WalkDir(state, func(p string, d fs.DirEntry, err error) error {
			if err != nil || d.IsDir() {
				return err
			}
			b, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			for i, s := range secrets {
				if bytes.Contains(b, []byte(s)) {
					t.Errorf("%s holds secret #%d (a password or its Authorization header)", p, i)
				}
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		if logs, _ := filepath.Glob(filepath.Join(state, "logs", "*.log")); len(logs) == 0 {
			t.Errorf("no log files in %s/logs to check", state)
		}
	})
}

// kubeforgeWith runs the CLI as kubeforge() does, with env added to its environment (and to no other process's).
// Its output must hold none of secrets; they are masked before the output is logged or returned.
func kubeforgeWith(ctx context.Context, t testing.TB, env, secrets []string, args ...string) (int, string) {
	t.Helper()
	cmd := exec.CommandContext(ctx, kubeforgeBin(t), args...)
	cmd.Env = append(os.Environ(), env...)
	var buf bytes.Buffer
	cmd.Stdout, cmd.Stderr = &buf, &buf
	start := time.Now()
	err := cmd.Run()
	out := buf.String()
	for i, s := range secrets {
		if strings.Contains(out, s) {
			t.Errorf("kubeforge %s printed secret #%d (a password or its Authorization header)", args[0], i)
			out = strings.ReplaceAll(out, s, "<secret>")
		}
	}
	t.Logf("kubeforge %s (%s):\n%s", strings.Join(args, " "), time.Since(start).Round(time.Millisecond), out)
	if ee, ok := err.(*exec.ExitError); ok {
		return ee.ExitCode(), out
	}
	if err != nil {
		t.Fatalf("run kubeforge: %v", err)
	}
	return 0, out
}

// planFiles are the files the plan writes or removes on host, with why.
func planFiles(p *tasks.Plan, host string) map[string]string {
	out := map[string]string{}
	if hp := planHost(p, host); hp != nil {
		for _, f := range hp.Files {
			out[f.Path] = f.Reason
		}
	}
	return out
}

// mirrorPod is a pod on node that pulls image on every start. The scheduler
// places it (a pod bound by nodeName to a kubelet that has just started can
// be rejected as OutOfpods before the kubelet knows its capacity).
func mirrorPod(name, node, image string) *corev1.Pod {
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Labels: map[string]string{"kubeforge-e2e": name}},
		Spec: corev1.PodSpec{
			NodeSelector: map[string]string{"kubernetes.io/hostname": node},
			Containers:   []corev1.Container{{Name: "c", Image: image, ImagePullPolicy: corev1.PullAlways}},
		},
	}
}

func randomHex(t testing.TB, n int) string {
	t.Helper()
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(b)
}

// startRegistry runs the registry on n, on its harness address at mirrorPort: TLS with a certificate for that
// address from a new test CA, htpasswd auth for mirrorUser with pass (bcrypt), storage on n's filesystem. It
// returns the CA, PEM.
func startRegistry(ctx context.Context, t *testing.T, c *harnesslib.Cluster, n harnesslib.Node, pass string) []byte {
	t.Helper()
	caPEM, certPEM, keyPEM := registryPKI(t, n.Address)
	hash, err := bcrypt.GenerateFromPassword([]byte(pass), bcrypt.DefaultCost)
	if err != nil {
		t.Fatal(err)
	}
	config := registryConfig("/var/lib/kf-e2e-registry", net.JoinHostPort(n.Address, mirrorPort), registryEtc, false)
	if err := Upload(ctx, c, n, registryBinary(t), "/usr/local/bin/registry", 0o755); err != nil {
		t.Fatal(err)
	}
	for name, data := range map[string][]byte{
		"config.yml": []byte(config), "tls.crt": certPEM, "tls.key": keyPEM,
		"htpasswd": []byte(mirrorUser + ":" + string(hash) + "\n"),
	} {
		if err := WriteFile(ctx, c, n, registryEtc+"/"+name, data); err != nil {
			t.Fatal(err)
		}
	}
	MustSSH(ctx, t, c, n, "root", "chmod 600 "+registryEtc+"/tls.key "+registryEtc+"/htpasswd && "+
		"systemd-run -q --unit "+registryUnit+" -p Restart=on-failure /usr/local/bin/registry serve "+registryEtc+"/config.yml")
	client := registryClient(t, caPEM)
	err = wait.PollUntilContextTimeout(ctx, 500*time.Millisecond, time.Minute, true, func(ctx context.Context) (bool, error) {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "https://"+net.JoinHostPort(n.Address, mirrorPort)+"/v2/", nil)
		resp, err := client.Do(req)
		if err != nil {
			return false, nil
		}
		resp.Body.Close()
		return true, nil
	})
	if err != nil {
		t.Fatalf("the registry on %s does not answer: %v\n%s", n.Name, err,
			MustSSH(ctx, t, c, n, "root", "journalctl -u "+registryUnit+" -n 20 --no-pager -o cat; true"))
	}
	return caPEM
}

// registryConfig is a distribution registry's configuration: storage in root, TLS and htpasswd from the files
// tls.crt, tls.key and htpasswd of etc; readOnly refuses pushes and purges nothing (a registry serving a
// prepared storage). Without it the registry's defaults stand (its upload purging has settings of its own that
// a bare `enabled: true` lacks: the registry panics on them).
func registryConfig(root, addr, etc string, readOnly bool) string {
	maintenance := ""
	if readOnly {
		maintenance = `
  maintenance:
    readonly:
      enabled: true
    uploadpurging:
      enabled: false`
	}
	return fmt.Sprintf(`version: 0.1
log:
  level: info
storage:
  filesystem:
    rootdirectory: %s%s
http:
  addr: %s
  tls:
    certificate: %[4]s/tls.crt
    key: %[4]s/tls.key
auth:
  htpasswd:
    realm: kubeforge-e2e
    path: %[4]s/htpasswd
`, root, maintenance, addr, etc)
}

// registryPKI makes a CA and a serving certificate for ip that it signs; PEM.
func registryPKI(t *testing.T, ip string) (caPEM, certPEM, keyPEM []byte) {
	t.Helper()
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	caTmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "kubeforge e2e mirror CA"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	ca, _ := x509.ParseCertificate(caDER)
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: ip},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(24 * time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		IPAddresses: []net.IP{net.ParseIP(ip)},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER}),
		pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER})
}

// registryClient is an HTTPS client that trusts only caPEM.
func registryClient(t testing.TB, caPEM []byte) *http.Client {
	t.Helper()
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(caPEM) {
		t.Fatal("no certificate in the test CA")
	}
	return &http.Client{Timeout: time.Minute, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
}

// registryStatus is the status of a GET of url with basic auth (none when user is empty).
func registryStatus(ctx context.Context, t testing.TB, client *http.Client, url, user, pass string) int {
	t.Helper()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	if user != "" {
		req.SetBasicAuth(user, pass)
	}
	resp, err := client.Do(req)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	resp.Body.Close()
	return resp.StatusCode
}

// registryAccess counts the lines of the registry's access log for a request of the test image's manifest from
// addr that it answered with status.
func registryAccess(ctx context.Context, t testing.TB, c *harnesslib.Cluster, n harnesslib.Node, addr, status string) int {
	t.Helper()
	log := MustSSH(ctx, t, c, n, "root", "journalctl -u "+registryUnit+" --no-pager -o cat")
	re := regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(addr) + ` - \S+ \[[^]]*\] "(GET|HEAD) /v2/` + regexp.QuoteMeta(mirrorRepo) +
		`/manifests/\S+ HTTP/[0-9.]+" ` + status + ` `)
	return len(re.FindAllString(log, -1))
}

// pushOnlyInMirror pushes to the mirror, as mirrorRepo:mirrorTag, the artifacts' pause image with one more
// layer holding a random file: an image (and a layer) no node has, whose container runs until stopped. It
// returns the manifest's digest.
func pushOnlyInMirror(ctx context.Context, t *testing.T, client *http.Client, mirror, pass string) string {
	t.Helper()
	tars, _ := filepath.Glob(filepath.Join(ArtifactsDir(t), "images", "*.tar"))
	var config []byte
	var layers [][]byte
	for _, tarball := range tars {
		var err error
		if config, layers, err = savedImage(tarball, "registry.k8s.io/pause:"); err == nil {
			break
		}
		t.Logf("%s: %v", filepath.Base(tarball), err)
	}
	if config == nil {
		t.Fatalf("no pause image in the artifacts' images %v", tars)
	}
	var extra bytes.Buffer
	tw := tar.NewWriter(&extra)
	nonce := []byte(randomHex(t, 16) + "\n")
	if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: "kubeforge-e2e-only-in-mirror", Mode: 0o644, Size: int64(len(nonce)), ModTime: time.Unix(0, 0)}); err != nil {
		t.Fatal(err)
	}
	if _, err := tw.Write(nonce); err != nil {
		t.Fatal(err)
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	layers = append(layers, extra.Bytes())

	// The config names each layer by its uncompressed digest; the manifest by the gzipped blob's.
	var cfg map[string]any
	if err := json.Unmarshal(config, &cfg); err != nil {
		t.Fatalf("the pause image's config: %v", err)
	}
	rootfs, _ := cfg["rootfs"].(map[string]any)
	diffIDs, _ := rootfs["diff_ids"].([]any)
	if rootfs == nil || len(diffIDs) != len(layers)-1 {
		t.Fatalf("the pause image's config lists %d layers; the tarball has %d", len(diffIDs), len(layers)-1)
	}
	for i, id := range diffIDs {
		if id != sha256Digest(layers[i]) {
			t.Fatalf("the pause image's layer %d is %s; its config says %v", i, sha256Digest(layers[i]), id)
		}
	}
	rootfs["diff_ids"] = append(diffIDs, sha256Digest(extra.Bytes()))
	if h, ok := cfg["history"].([]any); ok {
		cfg["history"] = append(h, map[string]any{"created_by": "kubeforge e2e: a layer only the mirror has"})
	}
	config, err := json.Marshal(cfg)
	if err != nil {
		t.Fatal(err)
	}

	type descriptor struct {
		MediaType string `json:"mediaType"`
		Digest    string `json:"digest"`
		Size      int    `json:"size"`
	}
	repo := mirror + "/v2/" + mirrorRepo
	pushBlob := func(mediaType string, data []byte) descriptor {
		t.Helper()
		d := descriptor{MediaType: mediaType, Digest: sha256Digest(data), Size: len(data)}
		resp := registryDo(ctx, t, client, http.MethodPost, repo+"/blobs/uploads/", pass, "", nil, http.StatusAccepted)
		loc, err := resp.Location()
		if err != nil {
			t.Fatalf("blob upload: no Location: %v", err)
		}
		q := loc.Query()
		q.Set("digest", d.Digest)
		loc.RawQuery = q.Encode()
		registryDo(ctx, t, client, http.MethodPut, loc.String(), pass, "application/octet-stream", data, http.StatusCreated)
		return d
	}
	manifest := struct {
		SchemaVersion int          `json:"schemaVersion"`
		MediaType     string       `json:"mediaType"`
		Config        descriptor   `json:"config"`
		Layers        []descriptor `json:"layers"`
	}{SchemaVersion: 2, MediaType: "application/vnd.oci.image.manifest.v1+json"}
	for _, l := range layers {
		var gz bytes.Buffer
		zw := gzip.NewWriter(&gz)
		if _, err := zw.Write(l); err != nil {
			t.Fatal(err)
		}
		if err := zw.Close(); err != nil {
			t.Fatal(err)
		}
		manifest.Layers = append(manifest.Layers, pushBlob("application/vnd.oci.image.layer.v1.tar+gzip", gz.Bytes()))
	}
	manifest.Config = pushBlob("application/vnd.oci.image.config.v1+json", config)
	m, err := json.Marshal(manifest)
	if err != nil {
		t.Fatal(err)
	}
	resp := registryDo(ctx, t, client, http.MethodPut, repo+"/manifests/"+mirrorTag, pass, manifest.MediaType, m, http.StatusCreated)
	if got := resp.Header.Get("Docker-Content-Digest"); got != sha256Digest(m) {
		t.Fatalf("the registry stored the manifest as %q; want %s", got, sha256Digest(m))
	}
	return sha256Digest(m)
}

// registryDo makes one request of the registry's API as mirrorUser and fails t unless it answers want.
func registryDo(ctx context.Context, t *testing.T, client *http.Client, method, u, pass, contentType string, body []byte, want int) *http.Response {
	t.Helper()
	req, err := http.NewRequestWithContext(ctx, method, u, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.SetBasicAuth(mirrorUser, pass)
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	resp, err := client.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, u, err)
	}
	defer resp.Body.Close()
	msg, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	if resp.StatusCode != want {
		t.Fatalf("%s %s: %s: %s", method, redactQuery(u), resp.Status, msg)
	}
	return resp
}

// redactQuery drops a URL's query (an upload's state token) from a message.
func redactQuery(u string) string {
	p, err := url.Parse(u)
	if err != nil {
		return "(unparsable URL)"
	}
	p.RawQuery = ""
	return p.String()
}

func sha256Digest(b []byte) string {
	s := sha256.Sum256(b)
	return "sha256:" + hex.EncodeToString(s[:])
}

// savedImage reads the config and the layers (uncompressed tars, in order) of the first image of a docker-save
// tarball with a tag that starts with tagPrefix. A layer may be a symlink to another's.
func savedImage(tarball, tagPrefix string) (config []byte, layers [][]byte, err error) {
	files, err := readTar(tarball, map[string]bool{"manifest.json": true})
	if err != nil {
		return nil, nil, err
	}
	var entries []struct {
		Config   string
		RepoTags []string
		Layers   []string
	}
	if err := json.Unmarshal(files["manifest.json"], &entries); err != nil {
		return nil, nil, fmt.Errorf("read manifest.json: %w", err)
	}
	for _, e := range entries {
		if !slices.ContainsFunc(e.RepoTags, func(s string) bool { return strings.HasPrefix(s, tagPrefix) }) {
			continue
		}
		want := map[string]bool{e.Config: true}
		for _, l := range e.Layers {
			want[l] = true
		}
		// Up to two more passes: the symlinks' targets.
		for pass := 0; pass < 3; pass++ {
			if files, err = readTar(tarball, want); err != nil {
				return nil, nil, err
			}
			missing := false
			for _, l := range e.Layers {
				if target, ok := strings.CutPrefix(string(files[l]), "symlink:"); ok {
					want[target] = true
					missing = missing || files[target] == nil
				}
			}
			if !missing {
				break
			}
		}
		for _, l := range e.Layers {
			data := files[l]
			if target, ok := strings.CutPrefix(string(data), "symlink:"); ok {
				data = files[target]
			}
			if data == nil {
				return nil, nil, fmt.Errorf("layer %s of %v is not in the tarball", l, e.RepoTags)
			}
			layers = append(layers, data)
		}
		if files[e.Config] == nil {
			return nil, nil, fmt.Errorf("config %s of %v is not in the tarball", e.Config, e.RepoTags)
		}
		return files[e.Config], layers, nil
	}
	return nil, nil, fmt.Errorf("no image tagged %s*", tagPrefix)
}

// readTar reads the files of a tarball that want names; a symlink reads as "symlink:" and its target's path.
func readTar(tarball string, want map[string]bool) (map[string][]byte, error) {
	f, err := os.Open(tarball)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	out := map[string][]byte{}
	tr := tar.NewReader(f)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return out, nil
		}
		if err != nil {
			return nil, fmt.Errorf("read %s: %w", tarball, err)
		}
		if !want[h.Name] {
			continue
		}
		if h.Typeflag == tar.TypeSymlink {
			out[h.Name] = []byte("symlink:" + path.Join(path.Dir(h.Name), h.Linkname))
			continue
		}
		if out[h.Name], err = io.ReadAll(tr); err != nil {
			return nil, fmt.Errorf("read %s of %s: %w", h.Name, tarball, err)
		}
	}
}
