// Command joinflood hammers a join service with malformed and
// unauthenticated requests, as a hostile or broken client on the LAN
// would: wrong method, broken JSON, oversized bodies, bad shapes, unknown
// token IDs and wrong secrets for a real token ID. It prints a JSON summary
// of the answers by HTTP status (0 for a transport error).
//
//	joinflood -url https://10.99.0.50:9443/v1/join -n 3000 -token-id abcdef
package main

import (
	"bytes"
	"crypto/rand"
	"crypto/tls"
	"encoding/hex"
	"encoding/json"
	"flag"
	"fmt"
	"net/http"
	"os"
	"strings"
	"sync"
	"time"
)

func main() {
	url := flag.String("url", "", "join service URL")
	n := flag.Int("n", 3000, "requests")
	workers := flag.Int("c", 8, "concurrent senders")
	tokenID := flag.String("token-id", "abcdef", "a real token ID, sent with wrong secrets")
	flag.Parse()
	if *url == "" {
		fmt.Fprintln(os.Stderr, "joinflood: needs -url")
		os.Exit(2)
	}
	// No pin check: an attacker does not care whose server it is.
	client := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{
		TLSClientConfig: &tls.Config{InsecureSkipVerify: true}, MaxIdleConnsPerHost: *workers,
	}}
	var mu sync.Mutex
	byStatus := map[int]int{}
	var errs []string
	jobs := make(chan int)
	var wg sync.WaitGroup
	for range *workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range jobs {
				code, err := send(client, *url, i, *tokenID)
				mu.Lock()
				byStatus[code]++
				if err != nil && len(errs) < 5 {
					errs = append(errs, err.Error())
				}
				mu.Unlock()
			}
		}()
	}
	start := time.Now()
	for i := range *n {
		jobs <- i
	}
	close(jobs)
	wg.Wait()
	json.NewEncoder(os.Stdout).Encode(map[string]any{
		"requests": *n, "seconds": time.Since(start).Seconds(), "byStatus": byStatus, "errors": errs,
	})
}

func randHex(n int) string {
	b := make([]byte, n)
	rand.Read(b)
	return hex.EncodeToString(b)[:n]
}

// send makes request i, cycling through the kinds of bad input.
func send(client *http.Client, url string, i int, tokenID string) (int, error) {
	method, body := http.MethodPost, ""
	switch i % 7 {
	case 0:
		method = http.MethodGet
	case 1:
		body = `{"tokenID":` // cut short
	case 2:
		body = `{"name":"` + strings.Repeat("a", 20<<10) + `"}` // over the 16 KiB limit
	case 3:
		body = `{"tokenID":"` + randHex(6) + `","secret":"short","name":"evil","peerURL":"https://10.99.0.200:2380"}`
	case 4:
		body = `{"tokenID":"zzzzzz","secret":"` + randHex(32) + `","name":"evil","peerURL":"https://10.99.0.200:2380"}`
	case 5: // a real token ID with a wrong secret
		body = `{"tokenID":"` + tokenID + `","secret":"` + randHex(32) + `","name":"evil","peerURL":"https://10.99.0.200:2380"}`
	case 6: // valid shape, unknown token ID, bad peer URL
		body = `{"tokenID":"` + randHex(6) + `","secret":"` + randHex(32) + `","name":"evil","peerURL":"https://10.99.0.200"}`
	}
	req, err := http.NewRequest(method, url, bytes.NewBufferString(body))
	if err != nil {
		return 0, err
	}
	resp, err := client.Do(req)
	if err != nil {
		return 0, err
	}
	resp.Body.Close()
	return resp.StatusCode, nil
}
