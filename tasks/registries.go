package tasks

import (
	"context"
	"fmt"
	"path"
	"slices"
	"strings"

	"github.com/kubeforge/kubeforge/internal/nodefile"
	"github.com/kubeforge/kubeforge/manifests"
	"github.com/kubeforge/kubeforge/ssh"
)

// registriesMarkerPath lists the files of cluster.registries kubeforge wrote
// on the host, one path a line: what the next run removes when a registry or
// a mirror's file leaves the inventory, and what `reset` removes.
const registriesMarkerPath = "/var/lib/kubeforge/registries"

// registryRemovedReason is the plan's reason for a file of
// cluster.registries kubeforge wrote that the inventory no longer has.
const registryRemovedReason = "removed: no longer in cluster.registries"

// registryDir is containerd's config_path on h: kubeforge's own where it
// installs the runtime, else the one h's containerd's CRI is configured with
// (its first, when it lists several); "" when it reads no hosts files.
func registryDir(env *Env, h *Host) (string, error) {
	d, err := decideRuntime(env, h)
	if err != nil {
		return "", err
	}
	if d.Install {
		return manifests.RegistryHostsDir, nil
	}
	// Observed, not assumed: containerd 2.4.2's CRI with an empty
	// config_path did not read /etc/containerd/certs.d (a pull through a
	// mirror failed on 2026-12-07), whatever its transfer service does.
	dir, _, _ := strings.Cut(h.Facts.RegistryConfigPath, ":")
	return dir, nil
}

// registryFiles are the files of cluster.registries on h and, after them,
// the marker that lists them; removed are the files an earlier run wrote that
// are no longer wanted. Both are nil when the inventory has no registries
// and the host none of kubeforge's.
func registryFiles(env *Env, h *Host) (files []nodefile.File, removed []string, err error) {
	if len(env.Inv.Cluster.Registries) > 0 {
		dir, err := registryDir(env, h)
		if err != nil {
			return nil, nil, err
		}
		if dir == "" {
			return nil, nil, fmt.Errorf("%s's containerd has no registry config_path, so cluster.registries cannot reach it; "+
				"set config_path = %q in its CRI images plugin's registry section (in place of any registry.mirrors) and restart it, or let kubeforge install the runtime (cluster.runtime.install: always)",
				h.Name, manifests.RegistryHostsDir)
		}
		files = manifests.RegistryFiles(env.Inv, dir)
	}
	var list strings.Builder
	for _, f := range files {
		list.WriteString(f.Path + "\n")
	}
	for _, p := range h.Facts.RegistryFiles {
		if !slices.ContainsFunc(files, func(f nodefile.File) bool { return f.Path == p }) {
			removed = append(removed, p)
		}
	}
	if len(files) > 0 || len(h.Facts.RegistryFiles) > 0 {
		files = append(files, nodefile.File{Path: registriesMarkerPath, Mode: 0o644, Data: []byte(list.String())})
	}
	return files, removed, nil
}

// checkRegistries is the preflight check of cluster.registries on h: its
// containerd must read hosts.toml files.
func checkRegistries(env *Env, h *Host, add func(id string, sev Severity, ok bool, msg, fix string)) error {
	if len(env.Inv.Cluster.Registries) == 0 {
		return nil
	}
	dir, err := registryDir(env, h)
	if err != nil {
		return err
	}
	if dir == "" {
		why := "has no registry config_path"
		if h.Facts.RegistryMirrors {
			why = "has registry.mirrors (deprecated) and no config_path"
		}
		add("Registries", SeverityError, false, h.Facts.RuntimeVersion+" (not installed by kubeforge) "+why+": the mirrors of cluster.registries would not be used",
			"set config_path = \""+manifests.RegistryHostsDir+"\" under [plugins.\"io.containerd.cri.v1.images\".registry] (containerd 2) or "+
				"[plugins.\"io.containerd.grpc.v1.cri\".registry] (1.x) of its config, in place of any registry.mirrors, and restart it, or set cluster.runtime.install: always")
		return nil
	}
	add("Registries", SeverityError, true, fmt.Sprintf("%d registries through containerd's hosts files in %s", len(env.Inv.Cluster.Registries), dir), "")
	return nil
}

// ConvergeRegistries writes the files of cluster.registries on h and removes
// those an earlier run wrote that the inventory dropped. containerd reads
// them at each pull: nothing restarts. Until the removal is done the marker
// lists the dropped files too, so a run cut short leaves none unlisted.
func ConvergeRegistries(ctx context.Context, env *Env, h *Host) error {
	files, removed, err := registryFiles(env, h)
	if err != nil || len(files) == 0 {
		return err
	}
	marker := files[len(files)-1]
	if len(removed) > 0 {
		files[len(files)-1].Data = append(slices.Clip(marker.Data), []byte(strings.Join(removed, "\n")+"\n")...)
	}
	if _, err := push(ctx, h, files); err != nil {
		return err
	}
	if len(removed) == 0 {
		return nil
	}
	// The files, then their directories kubeforge made (a mirror's, then the
	// upstream's) when empty; never containerd's config_path itself.
	cmd := "set -e\nrm -f"
	var dirs []string
	for _, p := range removed {
		cmd += " " + ssh.Quote(p)
		dirs = append(dirs, dirOf(p))
		if path.Base(p) != "hosts.toml" {
			dirs = append(dirs, dirOf(dirOf(p)))
		}
	}
	slices.SortFunc(dirs, func(a, b string) int { // deepest first
		if len(a) != len(b) {
			return len(b) - len(a)
		}
		return strings.Compare(a, b)
	})
	for _, d := range slices.Compact(dirs) {
		cmd += "\nrmdir " + ssh.Quote(d) + " 2>/dev/null || true"
	}
	if _, err := h.Client.Run(ctx, cmd); err != nil {
		return fmt.Errorf("remove the registry files no longer in the inventory: %w", err)
	}
	for _, p := range removed {
		h.Changed(Change{Kind: ChangeHost, What: "removed " + p})
	}
	_, err = push(ctx, h, []nodefile.File{marker})
	return err
}
