// Command etcdlead makes a named member the etcd leader, for the lab's
// tests and scripts/bench-failover.sh: they put etcd's leadership on the
// VIP holder to check that the holder hands it away before a partition
// can cost an etcd election. It runs in a master's namespace with that
// master's etcd client credentials.
//
//	etcdlead -data-dir DIR -endpoints https://10.99.0.11:2379,... -to m2
package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "etcdlead:", err)
		os.Exit(1)
	}
}

func run() error {
	dataDir := flag.String("data-dir", "", "a master's data directory (its pki/ holds the etcd client credentials)")
	endpoints := flag.String("endpoints", "", "comma-separated client URLs of the members")
	to := flag.String("to", "", "name of the member to make the leader")
	flag.Parse()
	if *dataDir == "" || *endpoints == "" || *to == "" {
		return errors.New("usage: etcdlead -data-dir DIR -endpoints URL,... -to NAME")
	}
	pki := filepath.Join(*dataDir, "pki")
	cert, err := tls.LoadX509KeyPair(filepath.Join(pki, "apiserver-etcd-client.crt"), filepath.Join(pki, "apiserver-etcd-client.key"))
	if err != nil {
		return err
	}
	caPEM, err := os.ReadFile(filepath.Join(pki, "etcd", "ca.crt"))
	if err != nil {
		return err
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(caPEM) {
		return errors.New("no CA certificate in pki/etcd/ca.crt")
	}
	tlsCfg := &tls.Config{Certificates: []tls.Certificate{cert}, RootCAs: pool}
	eps := strings.Split(*endpoints, ",")
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	dial := func(eps ...string) (*clientv3.Client, error) {
		return clientv3.New(clientv3.Config{Endpoints: eps, TLS: tlsCfg, DialTimeout: 3 * time.Second, Logger: zap.NewNop()})
	}
	cli, err := dial(eps...)
	if err != nil {
		return err
	}
	defer cli.Close()
	list, err := cli.MemberList(ctx)
	if err != nil {
		return err
	}
	var target uint64
	for _, m := range list.Members {
		if m.Name == *to {
			target = m.ID
		}
	}
	if target == 0 {
		return fmt.Errorf("no member named %s", *to)
	}
	// MoveLeader must go to the leader: find it and talk to it alone.
	for _, ep := range eps {
		st, err := cli.Status(ctx, ep)
		if err != nil || st.Leader != st.Header.MemberId {
			continue
		}
		if st.Leader == target {
			return nil
		}
		lcli, err := dial(ep)
		if err != nil {
			return err
		}
		defer lcli.Close()
		_, err = lcli.MoveLeader(ctx, target)
		return err
	}
	return errors.New("no endpoint answered as the leader")
}
