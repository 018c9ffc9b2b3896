package main

import (
	"context"
	"fmt"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/k8s-master/k8s-master/pkg/certs"
	"github.com/k8s-master/k8s-master/pkg/control"
	"github.com/k8s-master/k8s-master/pkg/layout"
)

func newCertsCommand(dataDir *string) *cobra.Command {
	cmd := &cobra.Command{Use: "certs", Short: "Inspect and renew this master's certificates; rotate the cluster CAs"}
	var output string
	check := &cobra.Command{
		Use:   "check",
		Short: "List this master's certificates and the cluster CAs with subject, issuer, expiry and days left",
		Long: `List every certificate under DATA_DIR/pki, soonest expiry first. Leaf
certificates are renewed within 90 days of their expiry (at start and
every hour while the master runs); CAs are not renewed automatically. Works whether or not the master
runs (it reads the files).`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			now := time.Now()
			cs, err := certs.Check(layout.Layout{Root: *dataDir}.PKIDir(), now)
			if err != nil {
				return fmt.Errorf("%w; pass the --data-dir of a master", err)
			}
			out := cmd.OutOrStdout()
			if output == "json" {
				return printJSON(out, cs)
			}
			w := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
			fmt.Fprintln(w, "CERTIFICATE\tKIND\tSUBJECT\tISSUER\tEXPIRES\tDAYS LEFT")
			for _, c := range cs {
				kind := "leaf"
				if c.CA {
					kind = "CA"
				}
				fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\t%d\n", c.Name, kind, c.Subject, c.Issuer, c.NotAfter.Local().Format(time.RFC3339), c.DaysLeft)
			}
			w.Flush()
			for _, warn := range certs.Warnings(cs, now) {
				fmt.Fprintln(out, "warning:", warn)
			}
			return nil
		},
	}
	check.Flags().StringVarP(&output, "output", "o", "table", "table or json")
	renew := &cobra.Command{
		Use:   "renew",
		Short: "Re-issue every leaf certificate of the running master now; its parts use them without a restart",
		Long: `Ask the running master (through its control socket) to re-issue every leaf
certificate it has: apiserver serving, kubelet-client, etcd client, front-
proxy, etcd server and peer, controller-manager, scheduler, admin and join
service. The apiserver, etcd, the join service, the controller-manager and
the scheduler take them up without a restart; the old ones stay valid until
they expire. A running master does the same by itself for certificates
within 90 days of expiry (checked every hour). The admin kubeconfig is
rewritten with the new admin certificate.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx, cancel := context.WithTimeout(cmd.Context(), time.Minute)
			defer cancel()
			c, err := control.Dial(ctx, *dataDir)
			if err != nil {
				return fmt.Errorf("%w; certs renew needs the running master of --data-dir", err)
			}
			n, err := c.RenewCertificates(ctx)
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "renewed %d certificates of the master at %s; no restart needed\n", n, *dataDir)
			return nil
		},
	}
	cmd.AddCommand(check, renew, newRotateCACommand(dataDir))
	return cmd
}
