package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/k8s-master/k8s-master/pkg/addons"
	"github.com/k8s-master/k8s-master/pkg/cluster"
	"github.com/k8s-master/k8s-master/pkg/config"
	"github.com/k8s-master/k8s-master/pkg/join"
	"github.com/k8s-master/k8s-master/pkg/process"
	"github.com/k8s-master/k8s-master/pkg/service"
)

// addClusterCommands registers the multi-master commands: join, token,
// status, leave, member.
func addClusterCommands(root *cobra.Command, dataDir *string) {
	root.AddCommand(newJoinCommand(dataDir), newTokenCommand(dataDir), newStatusCommand(dataDir),
		newLeaveCommand(dataDir), newMemberCommand(dataDir), newSnapshotCommand(dataDir), newRestoreCommand(dataDir), newCertsCommand(dataDir), newSecretsCommand(dataDir),
		newWorkerCommand(dataDir), newVIPCommand(dataDir))
}

func newJoinCommand(dataDir *string) *cobra.Command {
	c := config.Default()
	var token, tokenFile string
	var force bool
	cmd := &cobra.Command{
		Use:   "join --token TOKEN",
		Short: "Make this machine a master of an existing cluster (as the k8s-master service where systemd runs)",
		Long: `Join the cluster the token names. The token's CA pin is checked before the
secret is sent; the cluster adds this master as an etcd learner, hands over
its shared secrets, and this master makes its own certificates, starts its
etcd member, is promoted to voter once caught up, then starts its apiserver,
controller-manager and scheduler. Later runs: k8s-master start.

On a host that runs systemd with the k8s-master service installed, join hands
the master to that service (enabled, so it survives reboots) and returns once
the control plane is ready; --foreground keeps it here.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if token == "" && tokenFile != "" {
				data, err := os.ReadFile(tokenFile)
				if err != nil {
					return fmt.Errorf("--token-file: %w", err)
				}
				token = strings.TrimSpace(string(data))
			}
			if token == "" && !isTerminal(os.Stdin) {
				if data, err := io.ReadAll(io.LimitReader(os.Stdin, 4096)); err == nil {
					token = strings.TrimSpace(string(data))
				}
			}
			if token == "" {
				return fmt.Errorf("--token is required (k8s-master token create prints one on a master)")
			}
			// Malformed tokens fail here, before anything is started.
			if _, err := join.ParseToken(token); err != nil {
				return err
			}
			c.DataDir = *dataDir
			if service.Use(cmd.Context(), foreground) {
				return serviceRun(cmd, &c, "join", token)
			}
			return runMaster(cmd, &c, func(ctx context.Context, c *config.Config, o cluster.Options) (*cluster.Master, error) {
				return cluster.Join(ctx, c, cluster.JoinOptions{Options: o, Token: token, Force: force})
			})
		},
	}
	nodeFlags(cmd.Flags(), &c)
	cmd.Flags().StringVar(&token, "token", "", "join token (from k8s-master init or token create); read from standard input when absent")
	cmd.Flags().StringVar(&tokenFile, "token-file", "", "read the join token from this file")
	addForegroundFlag(cmd)
	cmd.Flags().BoolVar(&force, "force", false, "join even if a voting member is unhealthy (risks the quorum)")
	return cmd
}

func isTerminal(f *os.File) bool {
	st, err := f.Stat()
	return err == nil && st.Mode()&os.ModeCharDevice != 0
}

func withAdmin(dataDir *string, fn func(ctx context.Context, a *cluster.Admin) error) error {
	process.SetupAdmin()
	a, err := cluster.OpenAdmin(*dataDir)
	if err != nil {
		return err
	}
	defer a.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	return fn(ctx, a)
}

func newTokenCommand(dataDir *string) *cobra.Command {
	cmd := &cobra.Command{Use: "token", Short: "Create, list and revoke join tokens of masters and workers"}
	var ttl time.Duration
	var usages int
	var description string
	var worker bool
	create := &cobra.Command{
		Use:   "create [--worker]",
		Short: "Create a join token and print it (a master token; with --worker, the kubeadm join line for a worker)",
		Long: `Without --worker: a master token (km1:...) for k8s-master join, printed alone
on standard output.

With --worker: a standard bootstrap token (<6>.<16>, a Secret in kube-system
that the token cleaner deletes once expired) for a worker node, printed as the
line to run on the worker:

  kubeadm join <VIP or master>:<port> --token <token> --discovery-token-ca-cert-hash sha256:<pin>

A worker without kubeadm uses it through k8s-master worker kubeconfig.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if worker && cmd.Flags().Changed("usages") {
				return fmt.Errorf("--usages is for master tokens; a worker token can be used until it expires or is revoked")
			}
			return withAdmin(dataDir, func(ctx context.Context, a *cluster.Admin) error {
				if worker {
					_, line, err := a.CreateWorkerToken(ctx, ttl, description)
					if err != nil {
						return err
					}
					fmt.Fprintln(cmd.OutOrStdout(), line)
					return nil
				}
				tok, err := a.CreateToken(ctx, ttl, usages, description)
				if err != nil {
					return err
				}
				fmt.Fprintln(cmd.OutOrStdout(), tok.String())
				return nil
			})
		},
	}
	create.Flags().BoolVar(&worker, "worker", false, "make a worker (bootstrap) token and print its kubeadm join line")
	create.Flags().DurationVar(&ttl, "ttl", 24*time.Hour, "how long the token is valid")
	create.Flags().IntVar(&usages, "usages", 0, "how many joins a master token allows (0: no limit until it expires)")
	create.Flags().StringVar(&description, "description", "", "a note shown by token list")

	var output string
	list := &cobra.Command{
		Use:   "list",
		Short: "List master and worker join tokens (never their secrets)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return withAdmin(dataDir, func(ctx context.Context, a *cluster.Admin) error {
				recs, err := a.Store().ListTokens(ctx)
				if err != nil {
					return err
				}
				workers, err := a.ListWorkerTokens(ctx)
				if err != nil {
					return err
				}
				if output == "json" {
					for i := range recs {
						recs[i].SecretHash = ""
					}
					return printJSON(cmd.OutOrStdout(), map[string]any{"master": recs, "worker": workers})
				}
				w := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
				fmt.Fprintln(w, "KIND\tID\tSTATE\tEXPIRES\tUSES\tDESCRIPTION")
				now := time.Now()
				for _, r := range recs {
					uses := fmt.Sprint(r.Uses)
					if r.UsageLimit > 0 {
						uses += fmt.Sprintf("/%d", r.UsageLimit)
					}
					fmt.Fprintf(w, "master\t%s\t%s\t%s\t%s\t%s\n", r.ID, r.State(now), r.Expires.Local().Format(time.RFC3339), uses, r.Description)
				}
				for _, r := range workers {
					expires := "never"
					if !r.Expires.IsZero() {
						expires = r.Expires.Local().Format(time.RFC3339)
					}
					fmt.Fprintf(w, "worker\t%s\t%s\t%s\t-\t%s\n", r.ID, r.State(now), expires, r.Description)
				}
				return w.Flush()
			})
		},
	}
	list.Flags().StringVarP(&output, "output", "o", "table", "table or json")

	revoke := &cobra.Command{
		Use:   "revoke TOKEN-ID",
		Short: "Revoke a master or worker join token (by ID, or the whole token)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return withAdmin(dataDir, func(ctx context.Context, a *cluster.Admin) error {
				kind, err := a.RevokeToken(ctx, args[0])
				if err != nil {
					return err
				}
				id := args[0]
				if t, err := parseMaybeToken(id); err == nil {
					id = t
				}
				id, _, _ = strings.Cut(id, ".")
				fmt.Fprintf(cmd.OutOrStdout(), "%s token %s revoked\n", kind, id)
				return nil
			})
		},
	}
	cmd.AddCommand(create, list, revoke)
	return cmd
}

// parseMaybeToken accepts a whole token where an ID is asked for.
func parseMaybeToken(s string) (string, error) {
	rest, ok := strings.CutPrefix(s, "km1:")
	if !ok {
		return "", fmt.Errorf("not a token")
	}
	id, _, _ := strings.Cut(rest, ".")
	return id, nil
}

func printJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

func newStatusCommand(dataDir *string) *cobra.Command {
	var output string
	cmd := &cobra.Command{
		Use:   "status",
		Short: "Show the masters: etcd members, leader, learners, health, quorum, failures tolerated",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return withAdmin(dataDir, func(ctx context.Context, a *cluster.Admin) error {
				st, err := a.Status(ctx)
				if err != nil {
					return err
				}
				out := cmd.OutOrStdout()
				if output == "json" {
					return printJSON(out, st)
				}
				fmt.Fprintf(out, "cluster %s: %d voting members, quorum %d, %d healthy, tolerates %d more failure(s)\n", st.ClusterID, st.Voters, st.Quorum, st.HealthyVoters, st.FailuresTolerated)
				if v := st.VIP; v != nil {
					if v.Holder != "" {
						fmt.Fprintf(out, "VIP %s: held by %s since %s\n", v.Address, v.Holder, v.Since.Local().Format(time.RFC3339))
					} else {
						fmt.Fprintf(out, "VIP %s: NOT HELD (no healthy master with quorum)\n", v.Address)
					}
				}
				if a := st.Space; a != nil {
					fmt.Fprintf(out, "etcd %s ALARM: %s\n  what to do: %s\n", a.Alarm, a.What, a.Do)
				}
				fmt.Fprintln(out)
				w := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
				fmt.Fprintln(w, "NAME\tROLE\tHEALTH\tLEADER\tVIP\tAPISERVER\tDB\tDB IN USE\tDB QUOTA\tRELEASE\tKUBERNETES\tETCD\tPEER URL")
				for _, m := range st.Members {
					role, health, leader, api := "voter", "healthy", "", "not ready"
					if m.Learner {
						role = "learner"
					}
					if !m.Healthy {
						health = "UNHEALTHY"
					} else if m.Alarm != "" {
						health = m.Alarm // serves reads, refuses writes
					}
					if m.Leader {
						leader = "*"
					}
					if m.APIServerReady {
						api = "ready"
					}
					name := m.Name
					if name == "" {
						name = "(" + m.IDHex + ")"
					}
					holds := ""
					if st.VIP != nil && st.VIP.Holder == m.Name && m.Name != "" {
						holds = "*"
					}
					fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\t%s\t%.1f MB\t%.1f MB\t%.1f MB\t%s\t%s\t%s\t%s\n", name, role, health, leader, holds, api, float64(m.DBSize)/1e6, float64(m.DBSizeInUse)/1e6, float64(m.DBSizeQuota)/1e6,
						orDash(m.Versions.Release), orDash(m.Versions.Kubernetes), orDash(m.Versions.Etcd), strings.Join(m.PeerURLs, ","))
				}
				w.Flush()
				for _, r := range st.Snapshots {
					last := "none yet"
					if !r.LastSuccess.IsZero() {
						last = fmt.Sprintf("last %s (etcd revision %d, %s, %.1f s)", r.LastSuccess.Local().Format(time.RFC3339), r.LastRevision, mb(r.LastBytes), r.LastSeconds)
					}
					fmt.Fprintf(out, "snapshots of %s: %s; every %s, keep %d, in %s; %d failed, %d skipped (nothing new)\n", r.Master, last, r.Interval, r.Retention, r.Dir, r.Failures, r.Skipped)
				}
				printAddons(out, st.Addons)
				printSecretsEncryption(out, st.SecretsEncryption)
				printCARotation(out, st.CARotation)
				if st.Mixed {
					fmt.Fprintln(out, "upgrade:", st.Upgrade)
				}
				for _, warn := range st.Warnings {
					fmt.Fprintln(out, "warning:", warn)
				}
				return nil
			})
		},
	}
	cmd.Flags().StringVarP(&output, "output", "o", "table", "table or json")
	return cmd
}

func newLeaveCommand(dataDir *string) *cobra.Command {
	var force, yes bool
	cmd := &cobra.Command{
		Use:   "leave",
		Short: "Take this master out of the cluster (its etcd member is removed, its local data wiped)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if !yes && !confirm(cmd, fmt.Sprintf("This stops the master on %s, removes it from the cluster and wipes its data. Continue? [y/N] ", *dataDir)) {
				return fmt.Errorf("not confirmed; pass --yes to skip the question")
			}
			return withAdmin(dataDir, func(ctx context.Context, a *cluster.Admin) error {
				out := cmd.OutOrStdout()
				if err := a.Leave(ctx, force, func(s string) { fmt.Fprintln(out, "  "+s) }); err != nil {
					return err
				}
				fmt.Fprintf(out, "%s left the cluster; it can join again with a new token\n", a.Config.Name)
				return nil
			})
		},
	}
	cmd.Flags().BoolVar(&force, "force", false, "leave even if that costs the cluster its quorum")
	cmd.Flags().BoolVarP(&yes, "yes", "y", false, "do not ask for confirmation")
	return cmd
}

func newMemberCommand(dataDir *string) *cobra.Command {
	cmd := &cobra.Command{Use: "member", Short: "Manage other masters"}
	var force bool
	remove := &cobra.Command{
		Use:   "remove NAME",
		Short: "Remove a master that is gone for good (its etcd member and registration)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return withAdmin(dataDir, func(ctx context.Context, a *cluster.Admin) error {
				if err := a.RemoveMember(ctx, args[0], force); err != nil {
					return err
				}
				fmt.Fprintf(cmd.OutOrStdout(), "member %s removed\n", args[0])
				return nil
			})
		},
	}
	remove.Flags().BoolVar(&force, "force", false, "remove even if that costs the cluster its quorum")
	cmd.AddCommand(remove)
	return cmd
}

func confirm(cmd *cobra.Command, question string) bool {
	if !isTerminal(os.Stdin) {
		return false
	}
	fmt.Fprint(cmd.OutOrStdout(), question)
	line, _ := bufio.NewReader(os.Stdin).ReadString('\n')
	return strings.EqualFold(strings.TrimSpace(line), "y") || strings.EqualFold(strings.TrimSpace(line), "yes")
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// printAddons is the add-ons' part of status: one line each.
func printAddons(out io.Writer, as []addons.Status) {
	for _, a := range as {
		switch a.State {
		case "running":
			fmt.Fprintf(out, "add-on %s: %d/%d ready (%s, %s)\n", a.Name, a.Ready, a.Desired, a.Kind, a.Image)
		default:
			fmt.Fprintf(out, "add-on %s: %s\n", a.Name, a.State)
		}
	}
}
