package main

import (
	"context"
	"fmt"
	"path/filepath"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/k8s-master/k8s-master/pkg/cluster"
	"github.com/k8s-master/k8s-master/pkg/snapshot"
)

func newSnapshotCommand(dataDir *string) *cobra.Command {
	cmd := &cobra.Command{Use: "snapshot", Short: "Save, list and verify recovery snapshots (etcd data and the cluster's identity)"}
	var output, dir string
	save := &cobra.Command{
		Use:   "save",
		Short: "Write a snapshot of this master's etcd member and the cluster's CAs, keys and settings",
		Long: `Write one archive (mode 0600) holding a consistent snapshot of this master's
etcd member, the cluster CAs and their keys, the service-account keys, the
secrets-encryption key and the recorded settings, with a manifest and
checksums; it is verified after writing. Keep it safe: it holds every secret
of the cluster.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return withAdmin(dataDir, func(ctx context.Context, a *cluster.Admin) error {
				out := output
				if out == "" {
					out = filepath.Join(dir, snapshot.DefaultName(a.State.ClusterID, a.Config.Name, time.Now()))
				}
				start := time.Now()
				m, err := a.SaveSnapshot(ctx, out)
				if err != nil {
					return err
				}
				fmt.Fprintf(cmd.OutOrStdout(), "%s\n", out)
				fmt.Fprintf(cmd.ErrOrStderr(), "snapshot of %s at etcd revision %d, %s, written and verified in %.1f s\n",
					m.Master, m.Revision, mb(m.Size()), time.Since(start).Seconds())
				return nil
			})
		},
	}
	save.Flags().StringVarP(&output, "output", "o", "", "archive file (default: a new file in --dir named after the cluster, this master and the time)")
	save.Flags().StringVar(&dir, "dir", snapshot.DefaultDir, "directory for the archive when --output is not given")

	list := &cobra.Command{
		Use:   "list",
		Short: "List the snapshots in a directory, oldest first (manifests only; verify checks the contents)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			entries, err := snapshot.List(dir)
			if err != nil {
				return fmt.Errorf("list %s: %w", dir, err)
			}
			out := cmd.OutOrStdout()
			if len(entries) == 0 {
				fmt.Fprintf(out, "no snapshots in %s\n", dir)
				return nil
			}
			w := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
			fmt.Fprintln(w, "CREATED\tMASTER\tCLUSTER\tREVISION\tSIZE\tVERSION\tFILE")
			for _, e := range entries {
				if e.Manifest == nil {
					fmt.Fprintf(w, "-\t-\t-\t-\t%s\t-\t%s (unreadable: %v)\n", mb(e.Bytes), e.Path, e.Err)
					continue
				}
				m := e.Manifest
				fmt.Fprintf(w, "%s\t%s\t%s\t%d\t%s\t%s\t%s\n", m.Created.Local().Format(time.RFC3339), m.Master, m.ClusterID, m.Revision, mb(e.Bytes), m.Versions.Release, e.Path)
			}
			return w.Flush()
		},
	}
	list.Flags().StringVar(&dir, "dir", snapshot.DefaultDir, "snapshot directory")

	verify := &cobra.Command{
		Use:   "verify FILE",
		Short: "Check a snapshot archive completely: every file against the manifest, every byte against the checksum",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			m, err := snapshot.Verify(args[0])
			if err != nil {
				return err
			}
			var names []string
			for _, f := range m.DataFiles() {
				names = append(names, f.Name)
			}
			fmt.Fprintf(cmd.OutOrStdout(), "%s: ok\n  cluster %s, taken of %s at %s\n  etcd revision %d, members %s\n  %s (Kubernetes %s, etcd %s)\n  files: %s, %s\n",
				args[0], m.ClusterID, m.Master, m.Created.Local().Format(time.RFC3339), m.Revision, strings.Join(m.Members, ", "),
				m.Versions.Release, m.Versions.Kubernetes, m.Versions.Etcd, snapshot.EtcdEntry, strings.Join(names, ", "))
			return nil
		},
	}
	cmd.AddCommand(save, list, verify)
	return cmd
}

func mb(n int64) string { return fmt.Sprintf("%.1f MB", float64(n)/1e6) }
