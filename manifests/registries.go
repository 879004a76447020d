package manifests

import (
	"encoding/base64"
	"fmt"
	"net/url"
	"os"
	"path"
	"strings"

	"github.com/kubeforge/kubeforge/internal/nodefile"
	"github.com/kubeforge/kubeforge/inventory"
)

// RegistryHostsDir is the config_path kubeforge gives the containerd it
// installs when the inventory has registries: a directory per upstream
// registry, each with a hosts.toml (containerd's docs/hosts.md), read at
// every pull, so a change to it restarts nothing.
const RegistryHostsDir = "/etc/containerd/certs.d"

// RegistryFiles are the files of cluster.registries under containerd's
// config_path dir: for each upstream, <dir>/<upstream>/hosts.toml and the CA,
// client certificate and key of its mirrors beside it. A hosts.toml that
// carries credentials and every client key are 0600.
func RegistryFiles(inv *inventory.Inventory, dir string) []nodefile.File {
	var files []nodefile.File
	for _, name := range inv.RegistryNames() {
		base := path.Join(dir, name)
		var toml strings.Builder
		fmt.Fprintf(&toml, "# Written by kubeforge from cluster.registries of cluster %q: the mirrors of %s, tried in order\n# before %s itself. kubeforge rewrites it on every up.\n",
			inv.Cluster.Name, name, name)
		mode := os.FileMode(0o644)
		for _, m := range inv.Cluster.Registries[name].Mirrors {
			u, err := url.Parse(m.URL)
			if err != nil {
				continue // validated: does not happen
			}
			// One directory per mirror host ("mirror.example.com_5000").
			mdir := path.Join(base, strings.NewReplacer(":", "_", "[", "", "]", "").Replace(u.Host))
			fmt.Fprintf(&toml, "\n[host.%s]\n  capabilities = [\"pull\", \"resolve\"]\n", tomlString(m.URL))
			if m.CAData != nil {
				files = append(files, nodefile.File{Path: path.Join(mdir, "ca.crt"), Mode: 0o644, Data: m.CAData})
				fmt.Fprintf(&toml, "  ca = %s\n", tomlString(path.Join(mdir, "ca.crt")))
			}
			if m.CertData != nil {
				files = append(files,
					nodefile.File{Path: path.Join(mdir, "client.crt"), Mode: 0o644, Data: m.CertData},
					nodefile.File{Path: path.Join(mdir, "client.key"), Mode: 0o600, Data: m.KeyData})
				fmt.Fprintf(&toml, "  client = [[%s, %s]]\n", tomlString(path.Join(mdir, "client.crt")), tomlString(path.Join(mdir, "client.key")))
			}
			if m.Insecure && u.Scheme == "https" {
				toml.WriteString("  skip_verify = true\n")
			}
			if m.Auth != "" {
				mode = 0o600
				fmt.Fprintf(&toml, "\n  [host.%s.header]\n    Authorization = [%s]\n", tomlString(m.URL), tomlString("Basic "+base64.StdEncoding.EncodeToString([]byte(m.Auth))))
			}
		}
		files = append(files, nodefile.File{Path: path.Join(base, "hosts.toml"), Mode: mode, Data: []byte(toml.String())})
	}
	return files
}

// tomlString quotes s as a TOML basic string. The inventory admits no
// control characters in what is quoted (URLs, paths, base64).
func tomlString(s string) string {
	return `"` + strings.NewReplacer(`\`, `\\`, `"`, `\"`).Replace(s) + `"`
}
