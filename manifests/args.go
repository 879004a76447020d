package manifests

import (
	"sort"
	"strconv"
	"strings"

	"github.com/kubeforge/kubeforge/inventory"
)

// arg is one --name=value flag.
type arg struct{ name, value string }

// argsToCommand renders flags as kubeadm's ArgumentsToCommand does: the defaults
// sorted by name (then value), each dropped when extra overrides it, then the extra
// flags (sorted by name, as a map has no order) appended at the end.
func argsToCommand(base []arg, extra map[string]string) []string {
	sorted := append([]arg(nil), base...)
	sort.SliceStable(sorted, func(i, j int) bool {
		if sorted[i].name == sorted[j].name {
			return sorted[i].value < sorted[j].value
		}
		return sorted[i].name < sorted[j].name
	})
	out := make([]string, 0, len(sorted)+len(extra))
	for _, a := range sorted {
		if _, overridden := extra[a.name]; overridden {
			continue
		}
		out = append(out, "--"+a.name+"="+a.value)
	}
	names := make([]string, 0, len(extra))
	for n := range extra {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		out = append(out, "--"+n+"="+extra[n])
	}
	return out
}

// setArg sets name to value in args, replacing an existing entry.
func setArg(args []arg, name, value string) []arg {
	for i := range args {
		if args[i].name == name {
			args[i].value = value
			return args
		}
	}
	return append(args, arg{name, value})
}

// withFeatureGates is a control-plane component's extraArgs with the
// inventory's featureGates as --feature-gates (as kubeadm users pass them, in
// each component's extraArgs); a feature-gates the user set there wins.
func withFeatureGates(inv *inventory.Inventory, extra map[string]string) map[string]string {
	gates := inv.Cluster.FeatureGates
	if len(gates) == 0 {
		return extra
	}
	if _, set := extra["feature-gates"]; set {
		return extra
	}
	out := make(map[string]string, len(extra)+1)
	for k, v := range extra {
		out[k] = v
	}
	names := make([]string, 0, len(gates))
	for n := range gates {
		names = append(names, n)
	}
	sort.Strings(names)
	parts := make([]string, 0, len(names))
	for _, n := range names {
		parts = append(parts, n+"="+strconv.FormatBool(gates[n]))
	}
	out["feature-gates"] = strings.Join(parts, ",")
	return out
}
