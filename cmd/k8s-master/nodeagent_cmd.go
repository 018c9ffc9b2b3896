package main

import (
	"fmt"
	"os/signal"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/k8s-master/k8s-master/pkg/addons"
	"github.com/k8s-master/k8s-master/pkg/nodeagent"
	"github.com/k8s-master/k8s-master/pkg/version"
)

func newNodeAgentCommand() *cobra.Command {
	cmd := &cobra.Command{Use: "node-agent", Short: "What runs on worker nodes: the node-agent add-on and its image"}
	c := nodeagent.Config{HostRoot: "/", KubeletKubeconfig: "/etc/kubernetes/kubelet.conf", KubeletConfig: "/var/lib/kubelet/config.yaml", Interval: 10 * time.Second}
	run := &cobra.Command{
		Use:   "run --node-name NAME --ca-dir DIR",
		Short: "Keep this node's kubelet in step with the cluster CAs (the node-agent DaemonSet runs it)",
		Long: `Run in the node-agent add-on's pods (DaemonSet kube-system/k8s-master-node-agent):
writes the cluster CA bundle the masters publish (ConfigMap
kube-system/k8s-master-ca, mounted at --ca-dir) into the kubelet's kubeconfig
and client CA file, renews the kubelet's client and serving certificates
when the CA that signs them changed (with the kubelet's own identity), and
restarts the kubelet after a change. This is how a CA rotation reaches
workers that joined before it.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if c.CADir == "" {
				return fmt.Errorf("--ca-dir is required: the directory the ConfigMap kube-system/k8s-master-ca is mounted at")
			}
			if c.Interval < time.Second {
				return fmt.Errorf("--interval %s is too short; give at least 1s", c.Interval)
			}
			ctx, stop := signal.NotifyContext(cmd.Context(), syscall.SIGTERM, syscall.SIGINT)
			defer stop()
			return nodeagent.Run(ctx, c)
		},
	}
	run.Flags().StringVar(&c.NodeName, "node-name", "", "the Node this runs on")
	run.Flags().StringVar(&c.CADir, "ca-dir", "", "directory of the published CAs (ca-bundle.crt, signing-ca.crt)")
	run.Flags().StringVar(&c.HostRoot, "host-root", c.HostRoot, "where the node's file system is (its paths are read under it)")
	run.Flags().StringVar(&c.KubeletKubeconfig, "kubelet-kubeconfig", c.KubeletKubeconfig, "the kubelet's --kubeconfig")
	run.Flags().StringVar(&c.KubeletConfig, "kubelet-config", c.KubeletConfig, "the kubelet's --config (for its clientCAFile)")
	run.Flags().DurationVar(&c.Interval, "interval", c.Interval, "how often to look")

	var output, repository string
	image := &cobra.Command{
		Use:   "image --output FILE [--image-repository REPO]",
		Short: "Write the node agent's container image (this binary) as an OCI archive",
		Long: `Write the image the node-agent add-on runs, this k8s-master binary, as an
OCI-layout archive. Without a registry, import it on every worker:

  ctr -n k8s.io images import FILE

or push it to the registry the masters' --image-repository names (for
example skopeo copy oci-archive:FILE docker://REPO/k8s-master:TAG). Give the
same --image-repository as the masters, so that the name matches the one the
DaemonSet asks for.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if output == "" {
				return fmt.Errorf("--output is required: the archive to write")
			}
			fmt.Fprintf(cmd.ErrOrStderr(), "writing %s ...\n", output)
			name, err := nodeagent.WriteImage(output, repository, version.Local().Release)
			if err != nil {
				return err
			}
			fmt.Fprintln(cmd.OutOrStdout(), name)
			return nil
		},
	}
	image.Flags().StringVarP(&output, "output", "o", "", "archive to write")
	image.Flags().StringVar(&repository, "image-repository", addons.DefaultImageRepository, "the masters' --image-repository")
	cmd.AddCommand(run, image)
	return cmd
}
