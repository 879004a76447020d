package manifests

import (
	"sort"
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
