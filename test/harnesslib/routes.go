package harnesslib

import (
	"bytes"
	"context"
	"fmt"
	"os/exec"
	"slices"
	"strings"
)

// The routed subnets of a harness (Options.Subnets > 1) are docker bridges that Docker isolates from each other
// (its DOCKER-ISOLATION-STAGE chains drop traffic from one bridge out of another). The harness lets exactly its
// own bridges forward to each other with ACCEPT rules in DOCKER-USER, the chain Docker leaves to its users and
// evaluates first. Each rule carries the comment kubeforge.harness.instance=PREFIX, by which Down finds and
// removes it. The egress fence of test/scripts/prereqs.sh (-i br-+ ! -o br-+ -j DROP, also in DOCKER-USER) stays:
// these rules only ever accept traffic from one harness bridge out of another.

// forwardChain is the iptables chain of the forwarding rules and of the egress fence.
const forwardChain = "DOCKER-USER"

// fenceRule is the egress fence that test/scripts/prereqs.sh installs.
var fenceRule = []string{"-i", "br-+", "!", "-o", "br-+", "-j", "DROP"}

// forwardRule lets traffic from bridge in out of bridge out.
type forwardRule struct{ In, Out string }

func ruleComment(instance string) string { return LabelInstance + "=" + instance }

// args are the rule's iptables match and target, after the chain.
func (r forwardRule) args(instance string) []string {
	return []string{"-i", r.In, "-o", r.Out, "-m", "comment", "--comment", ruleComment(instance), "-j", "ACCEPT"}
}

// forwardRules are the rules c's bridges need: one per ordered pair of distinct bridges.
func forwardRules(c *Cluster) []forwardRule {
	var out []forwardRule
	for _, a := range c.Networks {
		for _, b := range c.Networks {
			if a.Bridge != b.Bridge {
				out = append(out, forwardRule{In: a.Bridge, Out: b.Bridge})
			}
		}
	}
	return out
}

// parseForwardRules reads `iptables -S CHAIN` output and returns the forwarding rules of instance: exactly the
// shape forwardRule.args writes, with the instance's comment.
func parseForwardRules(out, instance string) []forwardRule {
	var rules []forwardRule
	for _, l := range lines(out) {
		f := strings.Fields(l)
		for i := range f {
			f[i] = strings.Trim(f[i], `"`)
		}
		if len(f) != 12 || f[0] != "-A" || f[1] != forwardChain {
			continue
		}
		r := forwardRule{In: f[3], Out: f[5]}
		if slices.Equal(f[2:], r.args(instance)) {
			rules = append(rules, r)
		}
	}
	return rules
}

// iptables runs iptables (waiting for the xtables lock) and returns its stdout.
func iptables(ctx context.Context, args ...string) (string, error) {
	var out, errb bytes.Buffer
	cmd := exec.CommandContext(ctx, "iptables", append([]string{"-w", "5"}, args...)...)
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("iptables %s: %w: %s", strings.Join(args, " "), err, shortErr(errb.Bytes()))
	}
	return out.String(), nil
}

// checkFence fails unless the egress fence is in place: with forwarding between bridges allowed, it is what
// still keeps every harness packet on this machine.
func checkFence(ctx context.Context) error {
	if _, err := iptables(ctx, append([]string{"-C", forwardChain}, fenceRule...)...); err != nil {
		return fmt.Errorf("check the harness egress fence (run test/scripts/prereqs.sh): %w", err)
	}
	return nil
}

// ensureForwarding makes the DOCKER-USER rules of c exactly forwardRules(c): it adds the missing ones and removes
// the instance's rules for bridges it no longer has.
func ensureForwarding(ctx context.Context, c *Cluster) error {
	if err := checkFence(ctx); err != nil {
		return err
	}
	out, err := iptables(ctx, "-S", forwardChain)
	if err != nil {
		return fmt.Errorf("list forwarding rules: %w", err)
	}
	have := parseForwardRules(out, c.Instance)
	want := forwardRules(c)
	for _, r := range have {
		if !slices.Contains(want, r) {
			if _, err := iptables(ctx, append([]string{"-D", forwardChain}, r.args(c.Instance)...)...); err != nil {
				return fmt.Errorf("remove stale forwarding rule: %w", err)
			}
		}
	}
	for _, r := range want {
		if !slices.Contains(have, r) {
			if _, err := iptables(ctx, append([]string{"-I", forwardChain}, r.args(c.Instance)...)...); err != nil {
				return fmt.Errorf("allow forwarding from %s to %s: %w", r.In, r.Out, err)
			}
		}
	}
	return nil
}

// removeForwarding deletes every forwarding rule of instance, and returns how many it removed.
func removeForwarding(ctx context.Context, instance string) (int, error) {
	out, err := iptables(ctx, "-S", forwardChain)
	if err != nil {
		return 0, fmt.Errorf("list forwarding rules: %w", err)
	}
	rules := parseForwardRules(out, instance)
	for _, r := range rules {
		if _, err := iptables(ctx, append([]string{"-D", forwardChain}, r.args(instance)...)...); err != nil {
			return 0, fmt.Errorf("remove forwarding rule: %w", err)
		}
	}
	return len(rules), nil
}
