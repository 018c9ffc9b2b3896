package main

import (
	"github.com/spf13/cobra"

	"github.com/k8s-master/k8s-master/pkg/config"
	"github.com/k8s-master/k8s-master/pkg/reset"
)

func newResetCommand(dataDir *string) *cobra.Command {
	var o reset.Options
	cmd := &cobra.Command{
		Use:   "reset",
		Short: "Stop this master and delete its data directory",
		Long: `Stop the master (the k8s-master service, when it runs one) and delete the
data directory: cluster CA, etcd data, kubeconfigs. Only for a cluster whose
etcd has this master as its only member, or after this master has left its
multi-master cluster the way k8s-master leave does (refused when that would
cost the cluster its quorum; --force deletes the data anyway). Asks for
confirmation unless --yes.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			dir, err := resetDataDir(cmd, *dataDir)
			if err != nil {
				return err
			}
			o.DataDir, o.Out, o.In = dir, cmd.OutOrStdout(), cmd.InOrStdin()
			return reset.Run(cmd.Context(), o)
		},
	}
	cmd.Flags().BoolVarP(&o.Yes, "yes", "y", false, "do not ask for confirmation")
	cmd.Flags().BoolVar(&o.Force, "force", false, "reset even when this master cannot leave its multi-master cluster (the others keep it as a member until it is removed)")
	return cmd
}

// resetDataDir is --data-dir, else the config file's data-dir, else the
// default.
func resetDataDir(cmd *cobra.Command, flagValue string) (string, error) {
	if cmd.Flags().Changed("data-dir") {
		return flagValue, nil
	}
	fs := masterFileFlags()
	if _, err := config.ApplyFile(fs, nil, configFile, cmd.Flags().Changed("config")); err != nil {
		return "", err
	}
	return fs.Lookup("data-dir").Value.String(), nil
}
