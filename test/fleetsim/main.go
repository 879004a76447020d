// Command fleetsim is a SIMULATED fleet: one process serving N SSH endpoints on loopback addresses, so
// that kubeforge's own runner, SSH pool and memory can be measured at N = 100, 300, 1000 on one machine.
// It measures the orchestrator, not Kubernetes: no endpoint runs a command. Each answers exec requests
// from a transcript recorded on a real harness host (test/fleetsim/testdata), with that host's identity
// (hostname, IP, MACs, machine-id, product_uuid, clock) replaced by the endpoint's own, and answers
// the reachability probes between hosts from a model of the simulated network.
//
//	fleetsim serve  -n N [-dir DIR] [-control-planes K] [-port P] [-refuse I,J] [-stats FILE] [-- CMD ARGS...]
//	fleetsim record -harness DIR [-dir DIR] -out FILE [-- CMD ARGS...]
//	fleetsim report RESULTS.jsonl > FRAGMENT.md
//	fleetsim profile -i INVENTORY -cpuprofile FILE -heapprofile FILE
//
// serve writes DIR/id_ed25519 (0600, the client key the endpoints accept), DIR/known_hosts (one ed25519
// host key per endpoint) and DIR/inventory.yaml, then serves until SIGINT/SIGTERM or, given a command,
// until the command exits (its exit status is fleetsim's). It prints a JSON summary of per-endpoint
// statistics on exit and on SIGUSR1. record is a proxy in front of real hosts that saves every exec
// and its answer. profile runs kubeforge's preflight playbook in-process with CPU and heap profiles
// (kubeforge has no profiling hook). README.md says how to record, run and read the figures.
package main

import (
	"fmt"
	"os"
)

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: fleetsim serve|record|report|profile ... (fleetsim CMD -h for flags)")
		os.Exit(2)
	}
	var err error
	code := 0
	switch os.Args[1] {
	case "serve":
		code, err = serveMain(os.Args[2:])
	case "record":
		code, err = recordMain(os.Args[2:])
	case "report":
		err = reportMain(os.Args[2:], os.Stdout)
	case "profile":
		err = profileMain(os.Args[2:])
	default:
		err = fmt.Errorf("unknown command %q: want serve, record, report or profile", os.Args[1])
		code = 2
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "fleetsim:", err)
		if code == 0 {
			code = 1
		}
	}
	os.Exit(code)
}
