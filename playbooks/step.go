// Package playbooks holds kubeforge's playbooks (up, scale, scale --remove,
// reset, certs, preflight) as ordered lists of named steps, and the one runner
// that executes them.
package playbooks

import (
	"fmt"
	"strings"
	"time"

	"github.com/kubeforge/kubeforge/inventory"
	"github.com/kubeforge/kubeforge/tasks"
)

// Step is one named unit of a playbook. Exactly one of Run or Local is set.
type Step struct {
	Name    string             // stable: "control-plane/init"; used by --skip, --only, logs, errors
	Help    string             // one line for plans and help text
	Hosts   inventory.Selector // which hosts a host step runs on
	Serial  bool               // one host at a time
	Run     tasks.HostFunc
	Local   tasks.LocalFunc
	Timeout time.Duration // 0: the runner's default
	// Always marks steps that run even with --only (connecting, gathering facts).
	Always bool
	// When, if set, narrows the hosts at run time, from what earlier steps
	// learned (for example: only hosts that are not nodes yet).
	When *tasks.Predicate
	// Tolerate, if set, names the hosts whose failure in this step does not
	// fail the run: they are reported unreachable and left out of the later
	// steps (a control plane that is down while the others carry on).
	Tolerate *tasks.Predicate
	// Batches, if set, splits the step's hosts into batches run one after
	// the other (a batch's hosts at once); a batch with a failed host stops
	// the step, and a requested stop ends it between batches.
	Batches func(env *tasks.Env, hosts []*tasks.Host) [][]*tasks.Host
	// BeforeBatch runs before each batch's hosts start (the upgrade cordons
	// the whole batch before draining any of it).
	BeforeBatch tasks.BatchFunc
	// After runs once the step's hosts have finished, whatever their
	// outcome, with all the step's hosts (the artifacts step stops the peer
	// servers it started). Its error fails the step.
	After tasks.BatchFunc
	// ReadOnly marks the steps that only look (connect, facts, preflight, the
	// plan): a dry run runs these and stops before the first other step.
	ReadOnly bool
	// Gate marks a step whose failure (a refusal) ends the run even in a
	// BestEffort playbook: no later step runs.
	Gate bool
}

// Playbook is an ordered list of steps.
type Playbook struct {
	Name  string
	Steps []Step
	// BestEffort keeps going on the other hosts when a host fails (reset):
	// the failed host is left out of later steps and all failures are
	// returned at the end. Otherwise the first failing step stops the run.
	BestEffort bool
	// AllHosts runs on every host of the file, those marked `remove: true`
	// too (reset). Otherwise they are left out of every step and only the
	// removal reaches them.
	AllHosts bool
}

// Observed reports whether the playbook computes a plan from the hosts (its
// dry run connects, reads and prints that plan).
func (p Playbook) Observed() bool {
	for _, s := range p.Steps {
		if s.Name == "plan" || strings.HasSuffix(s.Name, "/plan") {
			return true
		}
	}
	return false
}

// readOnly returns the leading read-only steps: what a dry run runs.
func (p Playbook) readOnly() Playbook {
	out := p
	out.Steps = nil
	for _, s := range p.Steps {
		if !s.ReadOnly {
			break
		}
		out.Steps = append(out.Steps, s)
	}
	return out
}

// Filter returns the playbook restricted by --skip and --only. Unknown step
// names are an error listing the valid ones.
func (p Playbook) Filter(skip, only []string) (Playbook, error) {
	known := map[string]bool{}
	for _, s := range p.Steps {
		known[s.Name] = true
	}
	match := func(name, pattern string) bool {
		// "control-plane" selects "control-plane/init" and the rest of its group.
		return name == pattern || strings.HasPrefix(name, pattern+"/")
	}
	var unknown []string
	for _, n := range append(append([]string(nil), skip...), only...) {
		ok := false
		for k := range known {
			if match(k, n) {
				ok = true
				break
			}
		}
		if !ok {
			unknown = append(unknown, n)
		}
	}
	if len(unknown) > 0 {
		return p, fmt.Errorf("unknown step %s; %s has: %s", strings.Join(unknown, ", "), p.Name, strings.Join(p.Names(), ", "))
	}
	out := Playbook{Name: p.Name, BestEffort: p.BestEffort, AllHosts: p.AllHosts}
	for _, s := range p.Steps {
		keep := len(only) == 0 || s.Always
		for _, n := range only {
			if match(s.Name, n) {
				keep = true
			}
		}
		for _, n := range skip {
			if match(s.Name, n) && !s.Always {
				keep = false
			}
		}
		if keep {
			out.Steps = append(out.Steps, s)
		}
	}
	return out, nil
}

// Names returns the step names in order.
func (p Playbook) Names() []string {
	out := make([]string, len(p.Steps))
	for i, s := range p.Steps {
		out[i] = s.Name
	}
	return out
}

// Plan renders the steps x hosts table that --dry-run prints.
func (p Playbook) Plan(inv *inventory.Inventory) string {
	var b strings.Builder
	fmt.Fprintf(&b, "Plan for %q (%s, %d hosts):\n", p.Name, inv.Cluster.Name, len(inv.Hosts))
	for i, s := range p.Steps {
		where := "local"
		if s.Run != nil {
			var names []string
			for _, h := range s.Hosts.Select(inv) {
				names = append(names, h.Name)
			}
			if len(names) == 0 {
				names = []string{"(no hosts)"}
			}
			mode := "parallel"
			if s.Serial {
				mode = "serial"
			}
			sel := s.Hosts.Name
			if s.When != nil {
				sel += " that are " + s.When.Name
			}
			where = fmt.Sprintf("%s, %s: %s", sel, mode, strings.Join(names, ", "))
		}
		fmt.Fprintf(&b, "%3d. %-32s %s\n", i+1, s.Name, where)
		if s.Help != "" {
			fmt.Fprintf(&b, "     %s\n", s.Help)
		}
	}
	return b.String()
}
