// Command dnsload measures how many DNS queries per second a server
// answers: -c workers each send an A query for -name over UDP and wait for
// its answer before the next, for -d; it prints the answered queries per
// second, the failures and the median and 99th percentile latency. The
// add-on bench (scripts/bench-addons.sh) copies it, static, into a pod and
// aims it at the cluster DNS Service's address.
//
//	dnsload -server 10.96.0.10:53 -name kubernetes.default.svc.cluster.local [-c 4] [-d 10s]
package main

import (
	"crypto/rand"
	"encoding/binary"
	"errors"
	"flag"
	"fmt"
	"net"
	"os"
	"sort"
	"sync"
	"time"

	"golang.org/x/net/dns/dnsmessage"
)

func main() {
	server := flag.String("server", "", "DNS server host:port")
	name := flag.String("name", "", "name to ask for (A)")
	workers := flag.Int("c", 4, "concurrent queriers")
	dur := flag.Duration("d", 10*time.Second, "how long to query")
	flag.Parse()
	if *server == "" || *name == "" {
		fmt.Fprintln(os.Stderr, "usage: dnsload -server HOST:PORT -name NAME [-c 4] [-d 10s]")
		os.Exit(2)
	}
	q, err := dnsmessage.NewName(dnsName(*name))
	if err != nil {
		fmt.Fprintln(os.Stderr, "dnsload:", err)
		os.Exit(2)
	}
	var (
		mu        sync.Mutex
		latencies []time.Duration
		failures  int
		firstErr  error
	)
	deadline := time.Now().Add(*dur)
	var wg sync.WaitGroup
	for range *workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			conn, err := net.Dial("udp", *server)
			if err != nil {
				mu.Lock()
				failures++
				firstErr = err
				mu.Unlock()
				return
			}
			defer conn.Close()
			var own []time.Duration
			fails := 0
			var lastErr error
			for time.Now().Before(deadline) {
				start := time.Now()
				if err := query(conn, q); err != nil {
					fails++
					lastErr = err
					continue
				}
				own = append(own, time.Since(start))
			}
			mu.Lock()
			latencies = append(latencies, own...)
			failures += fails
			if lastErr != nil && firstErr == nil {
				firstErr = lastErr
			}
			mu.Unlock()
		}()
	}
	wg.Wait()
	sort.Slice(latencies, func(i, j int) bool { return latencies[i] < latencies[j] })
	pct := func(p float64) time.Duration {
		if len(latencies) == 0 {
			return 0
		}
		return latencies[int(p*float64(len(latencies)-1))]
	}
	fmt.Printf("%d answered in %s with %d queriers: %.0f queries/s, %d failed, latency p50 %.2f ms p99 %.2f ms\n",
		len(latencies), *dur, *workers, float64(len(latencies))/dur.Seconds(), failures,
		float64(pct(0.5).Microseconds())/1000, float64(pct(0.99).Microseconds())/1000)
	if firstErr != nil {
		fmt.Println("first failure:", firstErr)
	}
	if len(latencies) == 0 {
		os.Exit(1)
	}
}

func dnsName(n string) string {
	if n[len(n)-1] != '.' {
		return n + "."
	}
	return n
}

// query sends one A query and waits up to a second for its answer, which
// must carry an address.
func query(conn net.Conn, name dnsmessage.Name) error {
	var idb [2]byte
	rand.Read(idb[:])
	id := binary.BigEndian.Uint16(idb[:])
	msg := dnsmessage.Message{
		Header:    dnsmessage.Header{ID: id, RecursionDesired: true},
		Questions: []dnsmessage.Question{{Name: name, Type: dnsmessage.TypeA, Class: dnsmessage.ClassINET}},
	}
	pkt, err := msg.Pack()
	if err != nil {
		return err
	}
	if _, err := conn.Write(pkt); err != nil {
		return err
	}
	conn.SetReadDeadline(time.Now().Add(time.Second))
	buf := make([]byte, 1500)
	for {
		n, err := conn.Read(buf)
		if err != nil {
			return err
		}
		var reply dnsmessage.Message
		if err := reply.Unpack(buf[:n]); err != nil {
			return err
		}
		if reply.ID != id {
			continue // a late answer to an earlier query
		}
		if reply.RCode != dnsmessage.RCodeSuccess {
			return fmt.Errorf("rcode %s", reply.RCode)
		}
		for _, a := range reply.Answers {
			if a.Header.Type == dnsmessage.TypeA {
				return nil
			}
		}
		return errors.New("no A record in the answer")
	}
}
