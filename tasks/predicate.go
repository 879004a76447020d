package tasks

import "slices"

// Predicate narrows a step's hosts at run time from what earlier steps learned.
type Predicate struct {
	Name  string // shown in plans: "not nodes yet"
	Match func(env *Env, h *Host) bool
}

// NotJoined matches hosts the plan has join: workers whose kubelet has not
// joined, control planes whose etcd member joins or that initialise.
var NotJoined = &Predicate{Name: "not joined yet", Match: func(env *Env, h *Host) bool {
	p := env.Plan
	return p == nil || p.Init == h.Name || p.joinsCP(h.Name) || slices.Contains(p.JoinNodes, h.Name)
}}

// Initialises matches the host the plan has initialise a new cluster.
var Initialises = &Predicate{Name: "initialising a new cluster", Match: func(env *Env, h *Host) bool {
	return env.Plan != nil && env.Plan.Init == h.Name
}}

// NotInitialising matches the hosts that do not initialise the cluster.
var NotInitialising = &Predicate{Name: "not initialising", Match: func(env *Env, h *Host) bool {
	return env.Plan == nil || env.Plan.Init != h.Name
}}

// JoinsNode matches the workers whose kubelet the plan has join.
var JoinsNode = &Predicate{Name: "joining", Match: func(env *Env, h *Host) bool {
	return env.Plan != nil && slices.Contains(env.Plan.JoinNodes, h.Name)
}}

// ControlPlaneDown matches control planes: while one is down (it cannot be
// reached), the others carry the cluster and a run goes on without it.
var ControlPlaneDown = &Predicate{Name: "a control plane that is down", Match: func(env *Env, h *Host) bool {
	return h.IsControlPlane()
}}
