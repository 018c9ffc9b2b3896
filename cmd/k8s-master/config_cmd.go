package main

import (
	"fmt"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/k8s-master/k8s-master/pkg/config"
)

// configFile is the --config flag: the YAML file init and start read their
// settings from before the command line's flags.
var configFile = config.DefaultConfigFile

func addConfigFlag(root *cobra.Command) {
	root.PersistentFlags().StringVar(&configFile, "config", configFile, "YAML file with settings (keys are flag names); flags given override it")
}

// applyConfigFile sets cmd's flags from the config file where the command
// line did not set them. The default file may be absent; one named with
// --config must exist. Keys the file sets count as given flags.
func applyConfigFile(cmd *cobra.Command, c *config.Config) error {
	required := cmd.Flags().Changed("config")
	if _, err := config.ApplyFile(cmd.Flags(), config.FileKeys(masterFileFlags()), configFile, required); err != nil {
		return err
	}
	if f := cmd.Flags().Lookup("data-dir"); f != nil {
		c.DataDir = f.Value.String()
	}
	return nil
}

// completeConfig applies the config file, fills the host defaults and
// validates the result.
func completeConfig(cmd *cobra.Command, c *config.Config) error {
	if err := applyConfigFile(cmd, c); err != nil {
		return err
	}
	if err := c.Complete(); err != nil {
		return err
	}
	if err := c.Validate(); err != nil {
		return fmt.Errorf("invalid flags:\n  %w", indentJoin(err))
	}
	return nil
}

// masterFileFlags are the flags a config file may set: those of init and
// start, --data-dir included.
func masterFileFlags() *pflag.FlagSet {
	fs := pflag.NewFlagSet("k8s-master", pflag.ContinueOnError)
	fs.SortFlags = false
	c := config.Default()
	fs.StringVar(&c.DataDir, "data-dir", c.DataDir, "directory holding this master's state (PKI, etcd data, kubeconfigs)")
	masterFlags(fs, &c)
	return fs
}

func newConfigCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "config",
		Short: "Work with the configuration file",
		Args:  cobra.NoArgs,
	}
	cmd.AddCommand(&cobra.Command{
		Use:   "defaults",
		Short: "Print a commented configuration file with every key and its default",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return config.WriteDefaults(cmd.OutOrStdout(), masterFileFlags())
		},
	})
	cmd.AddCommand(&cobra.Command{
		Use:   "check [FILE]",
		Short: "Check a configuration file (default: the --config file) for unknown keys and wrong types",
		Args:  cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			path := configFile
			if len(args) == 1 {
				path = args[0]
			}
			set, err := config.ApplyFile(masterFileFlags(), nil, path, true)
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "%s: ok, %d setting(s)\n", path, len(set))
			return nil
		},
	})
	return cmd
}
