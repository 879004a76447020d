package main

import (
	"fmt"
	"io"

	"github.com/spf13/cobra"

	"github.com/kubeforge/kubeforge/playbooks"
)

func newBackupCmd(g *globals, stdout io.Writer) *cobra.Command {
	var out string
	cmd := &cobra.Command{
		Use:   "backup",
		Short: "Write the cluster's etcd snapshot, PKI and inventory to one archive on this workstation",
		Long: "Write the cluster's etcd snapshot (taken with etcd's own API from a live voting member and checked against\n" +
			"its checksum), the cluster PKI and the inventory to one tar.gz with a manifest of sha256 sums.\n" +
			"The archive holds the CA keys and every Secret of the cluster: it is written mode 0600; keep it as a secret.",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			res, err := playbooks.Run(cmd.Context(), &g.opts, playbooks.Backup(out))
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
			return nil
		},
	}
	cmd.Flags().StringVarP(&out, "to", "o", "", "the archive's path, or a directory for it (default <state dir>/backups)")
	return cmd
}
