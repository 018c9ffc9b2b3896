package main

import (
	"context"
	"fmt"

	"github.com/spf13/cobra"

	"github.com/k8s-master/k8s-master/pkg/cluster"
)

func newVIPCommand(dataDir *string) *cobra.Command {
	cmd := &cobra.Command{Use: "vip", Short: "Manage the cluster's virtual IP"}
	var iface string
	set := &cobra.Command{
		Use:   "set ADDRESS [--iface IF]",
		Short: "Give the running cluster a VIP, or move it to ADDRESS",
		Long: `Checks ADDRESS the way init --vip does on this host (a unicast address in the
subnet of --iface, or of the interface that holds it; outside the service
range; no master's address; nobody answers for it on the LAN), records it in
etcd, and waits until every master has applied it: each adds it to its
apiserver and join service certificates (no restart), writes an admin
kubeconfig naming it, records it for join tokens and cluster-info, and runs
the VIP election. Prints a join token that names the VIP. Masters that join
later inherit it; a master that was stopped applies it when it starts.
--iface names the interface on every master where it exists and holds the
VIP's subnet; the others find theirs by subnet.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return withAdmin(dataDir, func(ctx context.Context, a *cluster.Admin) error {
				out := cmd.OutOrStdout()
				tok, err := a.SetVIP(ctx, args[0], iface, func(s string) { fmt.Fprintln(out, "  "+s) })
				if err != nil {
					return err
				}
				fmt.Fprintf(out, "admin kubeconfig naming the VIP: %s\n", a.Config.Layout().AdminKubeconfig())
				fmt.Fprintf(out, "join token naming the VIP (valid 24 h):\n  %s\n", tok)
				return nil
			})
		},
	}
	set.Flags().StringVar(&iface, "iface", "", "interface for the VIP (default: the one whose subnet holds it)")
	cmd.AddCommand(set)
	return cmd
}
