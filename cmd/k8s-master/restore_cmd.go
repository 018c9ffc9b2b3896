package main

import (
	"context"
	"path/filepath"

	"github.com/spf13/cobra"

	"github.com/k8s-master/k8s-master/pkg/cluster"
	"github.com/k8s-master/k8s-master/pkg/config"
	"github.com/k8s-master/k8s-master/pkg/service"
)

func newRestoreCommand(dataDir *string) *cobra.Command {
	c := config.Default()
	var force bool
	cmd := &cobra.Command{
		Use:   "restore FILE",
		Short: "Rebuild a lost cluster from a snapshot on this machine, as its first master (as the k8s-master service where systemd runs)",
		Long: `Make this machine the first master of the cluster a snapshot (k8s-master
snapshot save, or a scheduled one) was taken of: the cluster's CAs, keys,
secrets-encryption key and settings come from the archive, this machine keeps
its own name, addresses and ports and gets its own certificates, and etcd
becomes a new one-member cluster holding every object of the snapshot. Its
revisions move on by a billion and older ones are compacted, so clients
watching from before the snapshot re-list instead of missing changes. Every
existing kubeconfig and pinned client keeps working; the other masters join
with the token it prints.

Refused with nothing written: a damaged or truncated archive, one from a newer
k8s-master, a data directory that is not empty, and a VIP that another host
still answers for (the old cluster is not gone: --force skips that check).
The VIP stays the snapshot's unless --vip moves it.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			archive, err := filepath.Abs(args[0])
			if err != nil {
				return err
			}
			c.DataDir = *dataDir
			if service.Use(cmd.Context(), foreground) {
				return serviceRun(cmd, &c, "restore", "", archive)
			}
			return runMaster(cmd, &c, func(ctx context.Context, c *config.Config, o cluster.Options) (*cluster.Master, error) {
				return cluster.Restore(ctx, c, cluster.RestoreOptions{Options: o, Archive: archive, Force: force})
			})
		},
	}
	nodeFlags(cmd.Flags(), &c)
	cmd.Flags().StringVar(&c.VIP, "vip", "", "move the cluster's virtual IP to this address (default: the snapshot's VIP)")
	cmd.Flags().BoolVar(&force, "force", false, "restore even if another host answers for the VIP")
	addForegroundFlag(cmd)
	return cmd
}
