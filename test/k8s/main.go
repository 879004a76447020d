// Command k8s is a multi-call ("hyperkube"-style) binary holding the Kubernetes
// v1.37 components, etcd and CoreDNS, built from Go modules for kubeforge's test
// harness. It dispatches on the base name it was called by (a symlink or hard
// link named kubelet, etcd, ...) or, failing that, on its first argument
// (`k8s kubectl version`).
package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	_ "time/tzdata" // CronJob time zones (kube-apiserver, kube-controller-manager)

	_ "github.com/coredns/coredns/core/plugin" // CoreDNS plugins
	"github.com/coredns/coredns/coremain"
	"go.etcd.io/etcd/server/v3/etcdmain"
	_ "k8s.io/client-go/plugin/pkg/client/auth" // kubectl auth plugins
	"k8s.io/component-base/cli"
	"k8s.io/component-base/logs"
	_ "k8s.io/component-base/logs/json/register"          // JSON log format
	_ "k8s.io/component-base/metrics/prometheus/clientgo" // client-go metrics
	_ "k8s.io/component-base/metrics/prometheus/version"  // version metric
	kubectlcmd "k8s.io/kubectl/pkg/cmd"
	kubectlutil "k8s.io/kubectl/pkg/cmd/util"
	apiserver "k8s.io/kubernetes/cmd/kube-apiserver/app"
	controllermanager "k8s.io/kubernetes/cmd/kube-controller-manager/app"
	proxy "k8s.io/kubernetes/cmd/kube-proxy/app"
	scheduler "k8s.io/kubernetes/cmd/kube-scheduler/app"
	kubeadm "k8s.io/kubernetes/cmd/kubeadm/app"
	kubeadmerrors "k8s.io/kubernetes/cmd/kubeadm/app/util/errors"
	kubelet "k8s.io/kubernetes/cmd/kubelet/app"
)

// commands maps a program name to its main function, as upstream's cmd/*/main.go call them.
func commands() map[string]func() int {
	return map[string]func() int{
		"kube-apiserver":          func() int { return cli.Run(apiserver.NewAPIServerCommand()) },
		"kube-controller-manager": func() int { return cli.Run(controllermanager.NewControllerManagerCommand()) },
		"kube-scheduler":          func() int { return cli.Run(scheduler.NewSchedulerCommand()) },
		"kubelet":                 func() int { return cli.Run(kubelet.NewKubeletCommand(context.Background())) },
		"kube-proxy":              func() int { return cli.Run(proxy.NewProxyCommand()) },
		"kubectl": func() int {
			logs.GlogSetter(kubectlcmd.GetLogVerbosity(os.Args)) //nolint:errcheck
			if err := cli.RunNoErrOutput(kubectlcmd.NewDefaultKubectlCommand()); err != nil {
				kubectlutil.CheckErr(err)
			}
			return 0
		},
		"kubeadm": func() int {
			kubeadmerrors.HandleError(kubeadm.Run())
			return 0
		},
		"etcd": func() int {
			etcdmain.Main(os.Args)
			return 0
		},
		"coredns": func() int {
			coremain.Run()
			return 0
		},
	}
}

func main() {
	cmds := commands()
	name := filepath.Base(os.Args[0])
	run, ok := cmds[name]
	if !ok && len(os.Args) > 1 {
		if run, ok = cmds[os.Args[1]]; ok {
			os.Args = os.Args[1:]
		}
	}
	if !ok {
		names := make([]string, 0, len(cmds))
		for n := range cmds {
			names = append(names, n)
		}
		sort.Strings(names)
		fmt.Fprintf(os.Stderr, "usage: %s COMMAND [ARGS...] (or call it through a link named COMMAND)\ncommands: %v\n", name, names)
		os.Exit(2)
	}
	os.Exit(run())
}
