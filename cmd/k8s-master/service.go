package main

import (
	"os"

	"github.com/spf13/cobra"

	"github.com/k8s-master/k8s-master/pkg/config"
	"github.com/k8s-master/k8s-master/pkg/service"
)

var foreground bool

func addForegroundFlag(cmd *cobra.Command) {
	cmd.Flags().BoolVar(&foreground, "foreground", false, "run the master in this process even on a host with systemd, instead of handing it to the k8s-master service")
}

// serviceRun runs init, join or restore (verb) inside the k8s-master
// service with this command's flags and args (see pkg/service).
func serviceRun(cmd *cobra.Command, c *config.Config, verb, token string, args ...string) error {
	fs := cmd.Flags()
	if err := service.CheckFlags(fs); err != nil {
		return err
	}
	exe, err := os.Executable()
	if err != nil {
		return err
	}
	argv := append(service.Args(exe, verb, fs), args...) // before the file marks its keys as given
	if err := completeConfig(cmd, c); err != nil {
		return err
	}
	ctx, cancel := signalContext()
	defer cancel()
	h := &service.HandOver{Verb: verb, Argv: argv, Token: token, Config: c, Out: cmd.OutOrStdout()}
	return h.Run(ctx)
}
