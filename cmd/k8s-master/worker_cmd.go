package main

import (
	"context"
	"fmt"

	"github.com/spf13/cobra"

	"github.com/k8s-master/k8s-master/pkg/cluster"
	"github.com/k8s-master/k8s-master/pkg/fsutil"
)

func newWorkerCommand(dataDir *string) *cobra.Command {
	cmd := &cobra.Command{Use: "worker", Short: "What worker nodes need from this cluster"}
	var token, output string
	kubeconfig := &cobra.Command{
		Use:   "kubeconfig --token TOKEN [--output FILE]",
		Short: "Write a bootstrap kubeconfig for a kubelet joining without kubeadm",
		Long: `Write the kubeconfig a kubelet started with --bootstrap-kubeconfig uses to get
its client certificate: the apiserver (the VIP when there is one), the cluster
CA embedded, and the worker token (k8s-master token create --worker). The file
holds the token: it is written with mode 0600; without --output it goes to
standard output.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if token == "" {
				return fmt.Errorf("--token is required (k8s-master token create --worker makes one)")
			}
			return withAdmin(dataDir, func(ctx context.Context, a *cluster.Admin) error {
				data, err := a.WorkerKubeconfig(ctx, token)
				if err != nil {
					return err
				}
				if output == "" || output == "-" {
					_, err := cmd.OutOrStdout().Write(data)
					return err
				}
				if err := fsutil.WriteFileAtomic(output, data, 0o600); err != nil {
					return fmt.Errorf("write %s: %w", output, err)
				}
				fmt.Fprintf(cmd.ErrOrStderr(), "wrote %s; on the worker: kubelet --bootstrap-kubeconfig %s --kubeconfig /etc/kubernetes/kubelet.conf ...\n", output, output)
				return nil
			})
		},
	}
	kubeconfig.Flags().StringVar(&token, "token", "", "worker token (from k8s-master token create --worker)")
	kubeconfig.Flags().StringVarP(&output, "output", "o", "", "file to write (mode 0600); standard output when absent")
	cmd.AddCommand(kubeconfig)
	return cmd
}
