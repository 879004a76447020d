package main

import (
	"fmt"
	"io"
	"path/filepath"
	"strings"

	"github.com/spf13/cobra"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/kubeforge/kubeforge/conformance"
	"github.com/kubeforge/kubeforge/playbooks"
	"github.com/kubeforge/kubeforge/tasks"
)

func newConformanceCmd(g *globals, stdout io.Writer) *cobra.Command {
	o := conformance.Options{}
	var artifacts string
	var checkOnly bool
	cmd := &cobra.Command{
		Use:   "conformance",
		Short: "Run Kubernetes' conformance suite against the cluster, offline, from the artifacts' bundle",
		Long: `Run the [Conformance] specs of Kubernetes' own e2e suite against the inventory's cluster: e2e.test and
ginkgo from the conformance bundle of the artifacts directory (ARTIFACTS/conformance, make conformance-bundle),
the test images pulled through the cluster's registry mirrors (cluster.registries). First the specs that may run
in parallel (--procs ginkgo processes), then the serial ones. Progress goes to stdout as specs finish; JUnit
reports and ginkgo's output go to --report-dir; a summary and every failure close the run (exit 1 when a spec
failed).

Before anything runs it checks, and refuses listing every problem: the bundle is there and is the cluster's
version, at least two nodes are schedulable, and a mirror serves every image the specs pull (docs/conformance.md).`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			inv, err := playbooks.Load(&g.opts)
			if err != nil {
				return err
			}
			if artifacts == "" {
				artifacts = inv.Cluster.Artifacts
			}
			b, err := conformance.LoadBundle(artifacts)
			if err != nil {
				return err
			}
			o.Bundle = b
			o.Kubeconfig = tasks.AdminKubeconfigPath(g.opts.StateDir)
			rc, err := clientcmd.BuildConfigFromFlags("", o.Kubeconfig)
			if err != nil {
				return fmt.Errorf("read the admin kubeconfig: %w (run `kubeforge up` first)", err)
			}
			kc, err := kubernetes.NewForConfig(rc)
			if err != nil {
				return err
			}
			if problems := conformance.Check(cmd.Context(), b, inv, kc); len(problems) > 0 {
				lines := make([]string, len(problems))
				for i, p := range problems {
					lines[i] = "  " + p.String()
				}
				return fmt.Errorf("conformance: not started, %d problem(s):\n%s", len(problems), strings.Join(lines, "\n"))
			}
			fmt.Fprintf(stdout, "conformance: bundle %s (%d images, all served by the mirrors), cluster %s\n", b.Version, len(b.Images), rc.Host)
			if checkOnly {
				return nil
			}
			if o.ReportDir == "" {
				o.ReportDir = filepath.Join(g.opts.StateDir, "conformance")
			}
			o.Progress = stdout
			s, err := conformance.Run(cmd.Context(), o)
			if s != nil {
				fmt.Fprintln(stdout)
				s.Write(stdout)
			}
			if err != nil {
				return err
			}
			if s.Failed() > 0 {
				return exitCode(1)
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&artifacts, "artifacts", "", "artifacts directory holding conformance/ (default: the inventory's cluster.artifacts)")
	f.StringVar(&o.ReportDir, "report-dir", "", "where JUnit reports and ginkgo's output go (default <state dir>/conformance)")
	f.IntVar(&o.Procs, "procs", 4, "ginkgo processes for the specs that may run in parallel")
	f.StringVar(&o.LabelFilter, "label-filter", "Conformance", "ginkgo label filter selecting the specs")
	f.StringVar(&o.Focus, "focus", "", "run only specs whose name matches this regular expression")
	f.StringVar(&o.Skip, "skip", "", "skip specs whose name matches this regular expression")
	f.StringSliceVar(&o.Phases, "phases", nil, "phases to run, in order: parallel, serial (default both)")
	f.BoolVar(&checkOnly, "check", false, "check the bundle, the nodes and the mirrors, then stop")
	return cmd
}
