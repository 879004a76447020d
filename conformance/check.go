package conformance

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/distribution/reference"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/kubeforge/kubeforge/inventory"
)

// Problem is one reason not to start: what is wrong and what to do.
type Problem struct {
	What, Fix string
}

func (p Problem) String() string { return p.What + "\n    fix: " + p.Fix }

// minNodes is the fewest schedulable nodes the suite needs (its pod-to-pod and scheduling specs spread pods).
const minNodes = 2

// Check reads the cluster and every image's mirror and returns what would make a run fail for reasons that are
// not the cluster's conformance: another version than the bundle's, fewer than two schedulable nodes, an image
// that no mirror of cluster.registries serves. It changes nothing.
func Check(ctx context.Context, b *Bundle, inv *inventory.Inventory, kc kubernetes.Interface) []Problem {
	var problems []Problem
	sv, err := kc.Discovery().ServerVersion()
	switch {
	case err != nil:
		problems = append(problems, Problem{What: "the API server does not answer: " + err.Error(),
			Fix: "run `kubeforge kubeconfig` to find one that answers, or `kubeforge up` to converge the cluster"})
		return problems
	case sv.GitVersion != b.Version:
		problems = append(problems, Problem{What: fmt.Sprintf("the cluster runs Kubernetes %s and the bundle is %s's suite", sv.GitVersion, b.Version),
			Fix: "build the bundle of the cluster's version (make conformance-bundle with its artifacts), or upgrade the cluster"})
	}
	nodes, err := kc.CoreV1().Nodes().List(ctx, metav1.ListOptions{})
	if err != nil {
		problems = append(problems, Problem{What: "list nodes: " + err.Error(), Fix: "check the admin kubeconfig of the state dir"})
	} else if n := schedulable(nodes.Items); len(n) < minNodes {
		problems = append(problems, Problem{What: fmt.Sprintf("%d schedulable Ready node(s) (%s); the suite needs at least %d", len(n), strings.Join(n, ", "), minNodes),
			Fix: "add a worker (kubeforge scale) or wait until the nodes are Ready; control planes with the NoSchedule taint do not count"})
	}
	// One problem per cause, naming its images: a missing mirror or wrong credentials is one fix.
	client := &http.Client{Timeout: 15 * time.Second}
	var causes []Problem
	images := map[Problem][]string{}
	for _, image := range b.Images {
		p := checkImage(ctx, client, inv, image)
		if p == nil {
			continue
		}
		if _, seen := images[*p]; !seen {
			causes = append(causes, *p)
		}
		images[*p] = append(images[*p], image)
	}
	for _, c := range causes {
		names := images[c]
		if len(names) == 1 {
			c.What = names[0] + ": " + c.What
		} else {
			c.What = fmt.Sprintf("%d images (%s): %s", len(names), strings.Join(names, ", "), c.What)
		}
		problems = append(problems, c)
	}
	return problems
}

// schedulable names the Ready nodes without a NoSchedule or NoExecute taint and not cordoned.
func schedulable(nodes []corev1.Node) []string {
	var names []string
	for _, n := range nodes {
		if n.Spec.Unschedulable || !ready(n) {
			continue
		}
		tainted := false
		for _, t := range n.Spec.Taints {
			if t.Effect == corev1.TaintEffectNoSchedule || t.Effect == corev1.TaintEffectNoExecute {
				tainted = true
			}
		}
		if !tainted {
			names = append(names, n.Name)
		}
	}
	return names
}

func ready(n corev1.Node) bool {
	for _, c := range n.Status.Conditions {
		if c.Type == corev1.NodeReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

// checkImage asks the mirrors of the image's registry for its manifest, as containerd would pull it (the
// mirror's CA, client certificate and credentials); nil when one serves it, else the cause (without the image's
// name when the cause is the mirror's, so that images failing alike share it).
func checkImage(ctx context.Context, client *http.Client, inv *inventory.Inventory, image string) *Problem {
	named, err := reference.ParseNormalizedNamed(image)
	if err != nil {
		return &Problem{What: fmt.Sprintf("not an image reference in images.txt: %v", err), Fix: "rebuild the bundle"}
	}
	tagged, ok := named.(reference.Tagged)
	if !ok {
		return &Problem{What: "no tag in images.txt", Fix: "rebuild the bundle"}
	}
	upstream := reference.Domain(named)
	mirrors := inv.Cluster.Registries[upstream].Mirrors
	if len(mirrors) == 0 {
		return &Problem{What: fmt.Sprintf("no mirror of %s in cluster.registries, and the nodes pull offline", upstream),
			Fix: fmt.Sprintf("load the bundle's images.tar into a registry and add it as a mirror of %s (docs/conformance.md)", upstream)}
	}
	var tried []string
	for _, m := range mirrors {
		status, err := headManifest(ctx, client, m, reference.Path(named), tagged.Tag())
		if err == nil && status == http.StatusOK {
			return nil
		}
		if err != nil {
			tried = append(tried, fmt.Sprintf("%s: %v", m.URL, err))
		} else {
			tried = append(tried, fmt.Sprintf("%s: HTTP %d", m.URL, status))
		}
	}
	return &Problem{What: fmt.Sprintf("no mirror serves it (%s)", strings.Join(tried, "; ")),
		Fix: "push the bundle's images.tar into the mirror (docs/conformance.md), or fix the mirror's address, CA or credentials"}
}

// headManifest is a registry API v2 HEAD of repo:tag at the mirror.
func headManifest(ctx context.Context, client *http.Client, m inventory.Mirror, repo, tag string) (int, error) {
	u, err := url.Parse(strings.TrimSuffix(m.URL, "/"))
	if err != nil {
		return 0, err
	}
	if !strings.HasSuffix(u.Path, "/v2") {
		u.Path += "/v2"
	}
	u.Path += "/" + repo + "/manifests/" + tag
	tlsConfig := &tls.Config{InsecureSkipVerify: m.Insecure} //nolint:gosec // the user's explicit `insecure: true`
	if len(m.CAData) > 0 {
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(m.CAData) {
			return 0, fmt.Errorf("its CA holds no certificate")
		}
		tlsConfig.RootCAs = pool
	}
	if len(m.CertData) > 0 {
		cert, err := tls.X509KeyPair(m.CertData, m.KeyData)
		if err != nil {
			return 0, fmt.Errorf("its client certificate: %w", err)
		}
		tlsConfig.Certificates = []tls.Certificate{cert}
	}
	c := *client
	c.Transport = &http.Transport{TLSClientConfig: tlsConfig, Proxy: nil}
	req, err := http.NewRequestWithContext(ctx, http.MethodHead, u.String(), nil)
	if err != nil {
		return 0, err
	}
	req.Header.Set("Accept", strings.Join([]string{
		"application/vnd.oci.image.index.v1+json", "application/vnd.oci.image.manifest.v1+json",
		"application/vnd.docker.distribution.manifest.list.v2+json", "application/vnd.docker.distribution.manifest.v2+json",
	}, ", "))
	if m.Auth != "" {
		req.Header.Set("Authorization", "Basic "+base64.StdEncoding.EncodeToString([]byte(m.Auth)))
	}
	resp, err := c.Do(req)
	if err != nil {
		return 0, err
	}
	resp.Body.Close()
	return resp.StatusCode, nil
}
