package main

import (
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/kubeforge/kubeforge/inventory"
	"github.com/kubeforge/kubeforge/playbooks"
	"github.com/kubeforge/kubeforge/tasks"
)

func newBackupCmd(g *globals, stdout io.Writer) *cobra.Command {
	var o tasks.BackupOptions
	cmd := &cobra.Command{
		Use:   "backup",
		Short: "Write the cluster's etcd snapshot, PKI and inventory to one archive on this workstation",
		Long: "Write the cluster's etcd snapshot (taken with etcd's own API from a live voting member and checked against\n" +
			"its checksum), the cluster PKI and the inventory to one tar.gz with a manifest of sha256 sums and sizes,\n" +
			"authenticated by an HMAC under the backup key: <state dir>/backup.key, made on the first backup, or the file\n" +
			"--backup-key or $" + tasks.BackupKeyEnv + " names. Keep a copy of the key apart from the backups (a password\n" +
			"manager): restore checks the archive with it. The archive holds the CA keys and every Secret of the cluster:\n" +
			"it is written mode 0600; keep it as a secret.",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			res, err := playbooks.Run(cmd.Context(), &g.opts, playbooks.Backup(o))
			if err != nil || res == nil {
				return err
			}
			b := res.Env.Backup
			if b == nil {
				return fmt.Errorf("backup: no archive was written")
			}
			fmt.Fprintf(stdout, "\nBackup of %s written to %s (mode 0600: it holds the CA keys and the cluster's Secrets)\n", b.Cluster, b.Path)
			fmt.Fprintf(stdout, "  sha256      %s\n", b.SHA256)
			fmt.Fprintf(stdout, "  etcd        cluster %s, revision %d, snapshot %d bytes from %s\n", b.ClusterID, b.Revision, b.Size, b.Via)
			fmt.Fprintf(stdout, "  members     %v\n", b.Members)
			fmt.Fprintf(stdout, "  kubernetes  %s\n", b.KubernetesVersion)
			fmt.Fprintf(stdout, "  time        %s\n", b.Time.Format("2006-01-02T15:04:05Z"))
			fmt.Fprintf(stdout, "  key         %s (id %s)\n", b.Key, b.KeyID)
			if b.KeyCreated {
				fmt.Fprintf(stdout, "\nA new backup key was made: %s. Keep a copy of it apart from the backups (a password manager):\n"+
					"restore checks every archive with it, and on another workstation it takes --backup-key FILE.\n", b.Key)
			}
			return nil
		},
	}
	cmd.Flags().StringVarP(&o.To, "to", "o", "", "the archive's path, or a directory for it (default <state dir>/backups)")
	cmd.Flags().StringVar(&o.Key, "backup-key", "", "the backup key file (default $"+tasks.BackupKeyEnv+", else <state dir>/backup.key, made on the first backup)")
	return cmd
}

func newRestoreCmd(g *globals, stdout io.Writer) *cobra.Command {
	var o tasks.RestoreOptions
	var yes, noConverge bool
	cmd := &cobra.Command{
		Use:   "restore",
		Short: "Rebuild the control plane from a backup archive: etcd's data on every control plane, then converge",
		Long: "Rebuild the control plane from an archive that `kubeforge backup` wrote. The archive is checked before any host\n" +
			"is contacted (its MAC under the backup key, every size and sha256, the snapshot's checksum, its CA against the\n" +
			"state dir's; an empty state dir takes the archive's PKI). Nothing but the run's log is written to the state dir,\n" +
			"and nothing to a host, until every check has passed. On every control plane: the static pods are held aside,\n" +
			"etcd's data is made from the snapshot with etcd's own restore code (a new etcd cluster whose members are the\n" +
			"inventory's control planes; revisions bumped so every watch relists), the old data is kept beside the data\n" +
			"directory, and the control plane is started again. Workers are not touched: their kubelets reconnect. Then\n" +
			"`up` converges the cluster.\n" +
			"An interrupted restore resumes where it stopped when run again with the same archive.\n\nSteps, in order:\n\n" +
			stepList(playbooks.Restore(tasks.RestoreOptions{})(&inventory.Inventory{})),
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if !yes && !g.opts.DryRun {
				q := fmt.Sprintf("Restore the control plane of %s from %s? Every write to the cluster since the backup is lost "+
					"(the current etcd data is kept aside on each control plane).", g.opts.Inventory, o.From)
				if err := confirm(stdout, q); err != nil {
					return err
				}
			}
			res, err := playbooks.Run(cmd.Context(), &g.opts, playbooks.Restore(o))
			if res != nil && res.Env.Restore != nil {
				res.Env.Restore.Archive.Close()
				writeRestore(stdout, res.Env.Restore, g.opts.DryRun)
			}
			if err != nil || res == nil || g.opts.DryRun {
				if g.opts.DryRun && err == nil {
					fmt.Fprintln(stdout, "Dry run: the archive was checked and the control planes were read; nothing was changed.")
				}
				return err
			}
			finish(stdout, g, res)
			if noConverge {
				return nil
			}
			fmt.Fprintf(stdout, "\nConverging the restored cluster with up:\n")
			res, err = playbooks.Run(cmd.Context(), &g.opts, playbooks.Up)
			if res != nil {
				finish(stdout, g, res)
			}
			return err
		},
	}
	f := cmd.Flags()
	f.StringVar(&o.From, "from", "", "the backup archive (written by kubeforge backup)")
	_ = cmd.MarkFlagRequired("from")
	f.StringVar(&o.Key, "backup-key", "", "the backup key file the archive was made with (default $"+tasks.BackupKeyEnv+", else <state dir>/backup.key)")
	f.BoolVar(&o.AllowUnauthenticated, "allow-unauthenticated", false, "restore an archive whose MAC is absent (an older kubeforge's) or cannot be checked: only one you trust")
	f.BoolVar(&o.AllowOtherVersion, "allow-other-version", false, "restore a backup taken at another Kubernetes minor than the cluster runs")
	f.BoolVar(&yes, "yes", false, "do not ask for confirmation")
	f.BoolVar(&noConverge, "no-converge", false, "stop after the control plane is restored; do not run up")
	f.BoolVar(&g.opts.DryRun, "dry-run", false, "check the archive, read the control planes, print the restore plan, change nothing")
	f.DurationVar(&g.opts.Tasks.WaitTimeout, "wait-timeout", 5*time.Minute, "how long to wait for the control plane and the kubelets")
	return cmd
}

// writeRestore prints the restore plan and, after a run, what etcd reports.
func writeRestore(w io.Writer, r *tasks.Restore, dryRun bool) {
	p := r.Plan
	if p == nil {
		return
	}
	fmt.Fprintf(w, "\nRestore of %s from %s\n", p.Cluster, p.Archive)
	fmt.Fprintf(w, "  backup      etcd cluster %s, revision %d, Kubernetes %s, taken %s\n", p.FromClusterID, p.Revision, p.KubernetesVersion, p.Taken.Format("2006-01-02T15:04:05Z"))
	if p.Unauthenticated != "" {
		fmt.Fprintf(w, "  key         NOT AUTHENTICATED (--allow-unauthenticated): %s\n", p.Unauthenticated)
	} else {
		fmt.Fprintf(w, "  key         authenticated by backup key %s\n", p.KeyID)
	}
	fmt.Fprintf(w, "  members     %s (token %s%s)\n", strings.Join(p.Members, ", "), p.Token, map[bool]string{true: ", resumed", false: ""}[p.Resumed])
	for _, h := range p.Hosts {
		var do []string
		if h.Install {
			do = append(do, "install the control plane (new host)")
		}
		if h.Stop {
			do = append(do, "stop its static pods")
		}
		switch {
		case h.Placed:
			do = append(do, "restored data in place already")
		case h.OldData:
			do = append(do, "keep its etcd data in "+h.KeepOldData, "place the restored data")
		default:
			do = append(do, "place the restored data")
		}
		fmt.Fprintf(w, "  %-11s %s\n", h.Host, strings.Join(do, "; "))
	}
	if dryRun || r.ClusterID == "" {
		return
	}
	fmt.Fprintf(w, "Restored: etcd cluster %s, revision %d, voting members %s\n", r.ClusterID, r.Revision, strings.Join(r.Members, ", "))
	fmt.Fprintf(w, "  kubelets reconnected: %s\n", strings.Join(r.Nodes, ", "))
	if len(r.Waiting) > 0 {
		fmt.Fprintf(w, "  not reconnected: %s\n", strings.Join(r.Waiting, ", "))
	}
}
