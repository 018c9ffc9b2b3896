// Command pollvip is the outside client of the VIP tests and of
// scripts/bench-failover.sh: it asks an apiserver's /readyz over a new
// connection every interval and logs each outcome, and it measures the
// outages in such a log.
//
//	pollvip poll -url https://VIP:6443/readyz -ca ca.crt [-interval 50ms] [-timeout 500ms] > log
//	pollvip gap -log log -from UNIXNANO -to UNIXNANO
//
// A log line is "<unix nanoseconds of the request's start> ok|fail <ms> [error]".
// gap prints the longest time without a success around a fault: from the
// last success that started before -from to the first success that started
// after it, within [-from, -to] (0 when no request failed).
package main

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"flag"
	"fmt"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"
)

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: pollvip poll|gap ...")
		os.Exit(2)
	}
	var err error
	switch os.Args[1] {
	case "poll":
		err = poll(os.Args[2:])
	case "gap":
		err = gap(os.Args[2:])
	default:
		err = fmt.Errorf("unknown command %q; use poll or gap", os.Args[1])
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "pollvip:", err)
		os.Exit(1)
	}
}

func poll(args []string) error {
	fs := flag.NewFlagSet("poll", flag.ExitOnError)
	url := fs.String("url", "", "URL to GET, e.g. https://10.99.0.50:6443/readyz")
	caFile := fs.String("ca", "", "CA certificate of the cluster")
	interval := fs.Duration("interval", 50*time.Millisecond, "time between request starts")
	timeout := fs.Duration("timeout", 500*time.Millisecond, "per-request timeout")
	fs.Parse(args)
	if *url == "" || *caFile == "" {
		return errors.New("poll needs -url and -ca")
	}
	caPEM, err := os.ReadFile(*caFile)
	if err != nil {
		return err
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(caPEM) {
		return fmt.Errorf("%s holds no PEM certificate", *caFile)
	}
	// A new connection per request, like a client that reconnects: a kept
	// connection to the old holder would hide or prolong the outage.
	client := &http.Client{Timeout: *timeout, Transport: &http.Transport{
		TLSClientConfig: &tls.Config{RootCAs: pool}, DisableKeepAlives: true,
	}}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	out := bufio.NewWriter(os.Stdout)
	defer out.Flush()
	ticker := time.NewTicker(*interval)
	defer ticker.Stop()
	for {
		start := time.Now()
		resp, err := client.Get(*url)
		ms := float64(time.Since(start).Microseconds()) / 1000
		switch {
		case err != nil:
			fmt.Fprintf(out, "%d fail %.1f %s\n", start.UnixNano(), ms, strings.ReplaceAll(err.Error(), "\n", " "))
		case resp.StatusCode != http.StatusOK:
			resp.Body.Close()
			fmt.Fprintf(out, "%d fail %.1f status %d\n", start.UnixNano(), ms, resp.StatusCode)
		default:
			resp.Body.Close()
			fmt.Fprintf(out, "%d ok %.1f\n", start.UnixNano(), ms)
		}
		out.Flush()
		select {
		case <-ctx.Done():
			return nil
		case <-ticker.C:
		}
	}
}

func gap(args []string) error {
	fs := flag.NewFlagSet("gap", flag.ExitOnError)
	logPath := fs.String("log", "", "log written by poll")
	from := fs.Int64("from", 0, "fault time, unix nanoseconds")
	to := fs.Int64("to", 0, "end of the window, unix nanoseconds")
	fs.Parse(args)
	f, err := os.Open(*logPath)
	if err != nil {
		return err
	}
	defer f.Close()
	g, err := MaxGap(f, *from, *to)
	if err != nil {
		return err
	}
	fmt.Printf("%.3f\n", g.Seconds())
	return nil
}
