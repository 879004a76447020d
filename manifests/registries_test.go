package manifests

import (
	"encoding/base64"
	"strings"
	"testing"

	"github.com/kubeforge/kubeforge/inventory"
)

// TestRegistryFiles: a hosts.toml per upstream with its mirrors in order,
// each mirror's files beside it, and the credentials only in a 0600 file.
func TestRegistryFiles(t *testing.T) {
	inv := &inventory.Inventory{Cluster: inventory.Cluster{Name: "c1", Registries: map[string]inventory.Registry{
		"registry.k8s.io": {Mirrors: []inventory.Mirror{
			{URL: "https://mirror.local:5000", CAData: []byte("CA"), CertData: []byte("CERT"), KeyData: []byte("KEY"), Auth: "puller:pw"},
			{URL: "https://second.local/k8s", Insecure: true},
		}},
		"docker.io": {Mirrors: []inventory.Mirror{{URL: "http://10.0.0.9:5000", Insecure: true}}},
	}}}
	files := RegistryFiles(inv, "/etc/containerd/certs.d")
	got := map[string]string{}
	var order []string
	for _, f := range files {
		got[f.Path] = f.Mode.String() + "\n" + string(f.Data)
		order = append(order, f.Path)
	}
	want := []string{
		"/etc/containerd/certs.d/docker.io/hosts.toml",
		"/etc/containerd/certs.d/registry.k8s.io/mirror.local_5000/ca.crt",
		"/etc/containerd/certs.d/registry.k8s.io/mirror.local_5000/client.crt",
		"/etc/containerd/certs.d/registry.k8s.io/mirror.local_5000/client.key",
		"/etc/containerd/certs.d/registry.k8s.io/hosts.toml",
	}
	if strings.Join(order, "\n") != strings.Join(want, "\n") {
		t.Fatalf("files:\n%s\nwant:\n%s", strings.Join(order, "\n"), strings.Join(want, "\n"))
	}
	k8s := got["/etc/containerd/certs.d/registry.k8s.io/hosts.toml"]
	for _, s := range []string{
		"-rw-------\n",
		`[host."https://mirror.local:5000"]`,
		`ca = "/etc/containerd/certs.d/registry.k8s.io/mirror.local_5000/ca.crt"`,
		`client = [["/etc/containerd/certs.d/registry.k8s.io/mirror.local_5000/client.crt", "/etc/containerd/certs.d/registry.k8s.io/mirror.local_5000/client.key"]]`,
		`[host."https://mirror.local:5000".header]`,
		`Authorization = ["Basic ` + base64.StdEncoding.EncodeToString([]byte("puller:pw")) + `"]`,
		`[host."https://second.local/k8s"]`,
		"skip_verify = true",
	} {
		if !strings.Contains(k8s, s) {
			t.Errorf("registry.k8s.io's hosts.toml lacks %q:\n%s", s, k8s)
		}
	}
	if strings.Index(k8s, "mirror.local:5000") > strings.Index(k8s, "second.local") {
		t.Errorf("the mirrors are not in the inventory's order:\n%s", k8s)
	}
	if strings.Count(k8s, "skip_verify") != 1 {
		t.Errorf("skip_verify on a mirror that is not insecure:\n%s", k8s)
	}
	if m := got["/etc/containerd/certs.d/registry.k8s.io/mirror.local_5000/client.key"]; !strings.HasPrefix(m, "-rw-------") {
		t.Errorf("client.key mode %s; want 0600", strings.SplitN(m, "\n", 2)[0])
	}
	docker := got["/etc/containerd/certs.d/docker.io/hosts.toml"]
	if !strings.HasPrefix(docker, "-rw-r--r--\n") || strings.Contains(docker, "skip_verify") || strings.Contains(docker, "Authorization") {
		t.Errorf("docker.io's hosts.toml (plain http, no credentials): want 0644, no skip_verify, no header:\n%s", docker)
	}
	if len(RegistryFiles(&inventory.Inventory{}, "/etc/containerd/certs.d")) != 0 {
		t.Errorf("files without registries")
	}
}
