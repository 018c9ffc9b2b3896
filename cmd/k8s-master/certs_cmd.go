package main

import (
	"fmt"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/k8s-master/k8s-master/pkg/certs"
	"github.com/k8s-master/k8s-master/pkg/layout"
)

func newCertsCommand(dataDir *string) *cobra.Command {
	cmd := &cobra.Command{Use: "certs", Short: "Inspect this master's certificates"}
	var output string
	check := &cobra.Command{
		Use:   "check",
		Short: "List this master's certificates and the cluster CAs with subject, issuer, expiry and days left",
		Long: `List every certificate under DATA_DIR/pki, soonest expiry first. Leaf
certificates are renewed when the master starts within 90 days of their
expiry; CAs are not renewed automatically. Works whether or not the master
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
	cmd.AddCommand(check)
	return cmd
}
