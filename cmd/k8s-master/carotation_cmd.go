package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/signal"
	"sort"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/k8s-master/k8s-master/pkg/cluster"
	"github.com/k8s-master/k8s-master/pkg/process"
)

func newRotateCACommand(dataDir *string) *cobra.Command {
	var window time.Duration
	cmd := &cobra.Command{
		Use:   "rotate-ca",
		Short: "Replace the cluster, front-proxy and etcd CAs on every master while the cluster serves",
		Long: `Replace the cluster, front-proxy and etcd CAs on every master, in phases
recorded in etcd; each master applies each phase in place (no process
restart) and the command waits for every registered master before the next:

  trust    the new CAs are trusted next to the old ones everywhere
  clients  the new CA signs kubelet certificates and the masters' client
           certificates; a new admin kubeconfig is written; the window runs
  serve    after the window: serving certificates come from the new CA
  drop     the old CAs are trusted nowhere

Clients that hold only the old CA (an old admin kubeconfig, a kubelet) keep
working during the window (--window, at least 5.5 minutes: client-go takes
up to 5 minutes to reload a CA file or a client certificate). Interrupting is
safe: run the command again and it carries on where the rotation stands;
a master that was down applies the phases it missed when it starts. In
phases trust and drop each master restarts its etcd member in place, one at
a time and with the VIP handed over first: etcd loads its trust bundle only
when a member starts.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			process.SetupAdmin()
			a, err := cluster.OpenAdmin(*dataDir)
			if err != nil {
				return err
			}
			defer a.Close()
			ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			return a.RotateCA(ctx, window, cmd.Flags().Changed("window"), cmd.OutOrStdout())
		},
	}
	cmd.Flags().DurationVar(&window, "window", 24*time.Hour, "how long clients holding only the old CAs keep working after the new ones sign")
	return cmd
}

// printCARotation is the CA rotation line of `status`.
func printCARotation(out io.Writer, r *cluster.CARotationStatus) {
	if r == nil {
		return
	}
	if r.Phase == "done" {
		fmt.Fprintf(out, "CA rotation %s: finished %s\n", r.ID, r.Finished.Local().Format(time.RFC3339))
		return
	}
	names := make([]string, 0, len(r.Masters))
	for n := range r.Masters {
		names = append(names, n)
	}
	sort.Strings(names)
	var per []string
	for _, n := range names {
		p := r.Masters[n]
		if p == "" {
			p = "none yet"
		}
		per = append(per, n+" "+p)
	}
	window := ""
	if !r.WindowEnds.IsZero() {
		window = "; old CAs served until " + r.WindowEnds.Local().Format(time.RFC3339)
	}
	fmt.Fprintf(out, "CA rotation %s: phase %s (applied: %s)%s; k8s-master certs rotate-ca carries it on\n", r.ID, r.Phase, strings.Join(per, ", "), window)
}
