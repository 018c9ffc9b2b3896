package main

import (
	"fmt"
	"io"
	"os"
	"time"

	"github.com/spf13/cobra"

	"github.com/k8s-master/k8s-master/pkg/cluster"
	"github.com/k8s-master/k8s-master/pkg/process"
	"github.com/k8s-master/k8s-master/pkg/secretskey"
)

// stopAfterEnv, for tests only, ends rotate-key right after the named phase
// was recorded, as if the command had been killed there.
const stopAfterEnv = "K8S_MASTER_TEST_ROTATE_STOP_AFTER"

func newSecretsCommand(dataDir *string) *cobra.Command {
	cmd := &cobra.Command{Use: "secrets", Short: "Manage the key that encrypts Secrets in etcd"}
	var output string
	var timeout time.Duration
	rotate := &cobra.Command{
		Use:   "rotate-key",
		Short: "Replace the secrets-encryption key on every master and re-encrypt every Secret, while the cluster serves",
		Long: `Make a new secrets-encryption key and move the whole cluster to it, in four
phases recorded in etcd, each taken up by every master's apiserver without
a restart:

  1. the new key is added to every master's configuration (it decrypts;
     nothing is written with it yet);
  2. it becomes the primary key on every master (every write uses it);
  3. every Secret is re-encrypted with it (in etcd, each object guarded by
     its revision) and each one is verified to decrypt with the new key alone;
  4. the old key is removed from every master's configuration.

Each phase waits until every master (every etcd member) reports that its
apiserver loaded it, so no master ever reads an object encrypted with a key
it lacks. Interrupted (the command or a master killed), run it again: it
resumes from the recorded phase. k8s-master status shows the key in use and
the phase.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if output != "text" && output != "json" {
				return fmt.Errorf("--output %q: use text or json", output)
			}
			process.SetupAdmin()
			a, err := cluster.OpenAdmin(*dataDir)
			if err != nil {
				return err
			}
			defer a.Close()
			out := cmd.OutOrStdout()
			r := a.SecretsKeyRotator(out)
			r.WaitTimeout = timeout
			r.StopAfter = secretskey.Phase(os.Getenv(stopAfterEnv))
			if output == "json" {
				r.Out = cmd.ErrOrStderr()
			}
			res, err := r.Run(cmd.Context())
			if err != nil {
				return err
			}
			if output == "json" {
				return printJSON(out, res)
			}
			return nil
		},
	}
	rotate.Flags().StringVarP(&output, "output", "o", "text", "text, or json: the result as JSON on stdout (progress on stderr)")
	rotate.Flags().DurationVar(&timeout, "wait-timeout", 3*time.Minute, "how long each phase waits for every master to load it before giving up (a rerun resumes)")
	cmd.AddCommand(rotate)
	return cmd
}

// printSecretsEncryption is status's line about the key.
func printSecretsEncryption(w io.Writer, s *secretskey.Status) {
	if s == nil {
		return
	}
	state := "never rotated"
	if s.LastRotated != "" {
		state = "last rotated " + s.LastRotated
	}
	if r := s.Rotation; r != nil {
		state = fmt.Sprintf("ROTATION from %s to %s at phase %s (started %s)", r.From, r.To, r.Phase, r.Started.Local().Format(time.RFC3339))
	}
	fmt.Fprintf(w, "secrets encryption: key %s (keys %v); %s\n", s.Primary, s.Keys, state)
	for _, m := range s.Masters {
		mark := ""
		if !m.Current {
			mark = " (not the desired configuration yet)"
		}
		fmt.Fprintf(w, "  %s runs keys %v%s\n", m.Name, m.Keys, mark)
	}
}
