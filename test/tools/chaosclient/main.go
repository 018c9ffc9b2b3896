// Command chaosclient is the reliability lab's workload, run inside the
// lab's client namespace so that it reaches the cluster the way real
// clients do: through the VIP. It records every operation (test/chaos) as
// JSON lines while it runs, prints "ready" once its ConfigMaps exist, and
// on SIGTERM stops, reads the final state and writes the verification of
// acknowledged operations.
//
//	chaosclient -kubeconfig admin.kubeconfig -history ops.jsonl -verify verify.json
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"
	"time"

	"k8s.io/client-go/tools/clientcmd"

	"github.com/k8s-master/k8s-master/test/chaos"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "chaosclient:", err)
		os.Exit(1)
	}
}

func run() error {
	kubeconfig := flag.String("kubeconfig", "", "admin kubeconfig whose server is the VIP")
	historyPath := flag.String("history", "", "where the operations go (JSON lines)")
	verifyPath := flag.String("verify", "", "where the final verification goes (JSON)")
	clients := flag.Int("clients", 4, "concurrent clients")
	keys := flag.Int("keys", 3, "ConfigMaps updated by compare-and-swap")
	seed := flag.Uint64("seed", uint64(time.Now().UnixNano()), "seed of the operation mix")
	flag.Parse()
	if *kubeconfig == "" || *historyPath == "" || *verifyPath == "" {
		return fmt.Errorf("needs -kubeconfig, -history and -verify")
	}
	rc, err := clientcmd.BuildConfigFromFlags("", *kubeconfig)
	if err != nil {
		return err
	}
	f, err := os.Create(*historyPath)
	if err != nil {
		return err
	}
	defer f.Close()
	hist := chaos.NewHistory(f)
	w, err := chaos.NewWorkloadForConfig(rc, chaos.WorkloadConfig{Clients: *clients, Keys: *keys, Seed: *seed}, hist)
	if err != nil {
		return err
	}
	setupCtx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	err = w.Setup(setupCtx)
	cancel()
	if err != nil {
		return fmt.Errorf("create the workload's ConfigMaps: %w", err)
	}
	fmt.Println("ready")

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	runErr := w.Run(ctx)
	stop()
	vctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	v, err := w.VerifyAcknowledged(vctx)
	if err != nil {
		return fmt.Errorf("verify: %w", err)
	}
	data, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return err
	}
	if err := os.WriteFile(*verifyPath, data, 0o644); err != nil {
		return err
	}
	if err := hist.Err(); err != nil {
		return fmt.Errorf("history: %w", err)
	}
	fmt.Printf("done: %d operations, %d lost\n", hist.Len(), len(v.Lost))
	return runErr
}
