package tasks

// Predicate narrows a step's hosts at run time from what earlier steps learned.
type Predicate struct {
	Name  string // shown in plans: "not nodes yet"
	Match func(env *Env, h *Host) bool
}

// NotNode matches hosts that are not nodes of the cluster yet.
var NotNode = &Predicate{Name: "not nodes yet", Match: func(env *Env, h *Host) bool { return !env.isNode(h) }}
