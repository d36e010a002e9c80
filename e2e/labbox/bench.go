package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"time"
)

// benchConfig is the parsed command line of "labbox bench".
type benchConfig struct {
	url      string
	bytes    int64
	requests int
	timeout  time.Duration
}

// BenchResult is what "labbox bench" prints, as one JSON line.
type BenchResult struct {
	// Bytes and Seconds are the download's size and duration; Mbps the
	// rate in megabits per second.
	Bytes   int64   `json:"bytes"`
	Seconds float64 `json:"seconds"`
	Mbps    float64 `json:"mbps"`
	// RTTMedianMicros and RTTP99Micros are the round trip of a small
	// request on a kept-alive connection.
	RTTMedianMicros float64 `json:"rttMedianMicros"`
	RTTP99Micros    float64 `json:"rttP99Micros"`
}

func parseBench(fs *flag.FlagSet, args []string) (benchConfig, error) {
	var cfg benchConfig
	fs.Int64Var(&cfg.bytes, "bytes", 64<<20, "download `n` bytes from URL/bytes/n for the throughput")
	fs.IntVar(&cfg.requests, "requests", 200, "`n` small requests for the round-trip time")
	fs.DurationVar(&cfg.timeout, "timeout", 60*time.Second, "give up after `duration`")
	if err := parseFlags(fs, args); err != nil {
		return benchConfig{}, err
	}
	if fs.NArg() != 1 {
		return benchConfig{}, usagef("bench takes exactly one URL after its flags, got %q", fs.Args())
	}
	if cfg.bytes <= 0 || cfg.requests <= 0 || cfg.timeout <= 0 {
		return benchConfig{}, usagef("bench: -bytes, -requests and -timeout must be positive")
	}
	cfg.url = strings.TrimSuffix(fs.Arg(0), "/")
	if u, err := url.Parse(cfg.url); err != nil || u.Scheme != "http" || u.Host == "" {
		return benchConfig{}, usagef("bench: %q is not an http:// URL", cfg.url)
	}
	return cfg, nil
}

// runBench implements "labbox bench": throughput of one TCP stream and
// round-trip time of small requests from this pod to an echo server, so
// that a benchmark can compare two paths measured the same way.
func runBench(ctx context.Context, p proc, fs *flag.FlagSet, args []string) error {
	cfg, err := parseBench(fs, args)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, cfg.timeout)
	defer cancel()
	client := &http.Client{Transport: &http.Transport{Proxy: nil, MaxIdleConnsPerHost: 1}}
	var res BenchResult
	start := time.Now()
	n, err := fetch(ctx, client, fmt.Sprintf("%s/bytes/%d", cfg.url, cfg.bytes))
	if err != nil {
		return err
	}
	res.Bytes, res.Seconds = n, time.Since(start).Seconds()
	res.Mbps = float64(n) * 8 / res.Seconds / 1e6
	rtts := make([]float64, 0, cfg.requests)
	for i := 0; i < cfg.requests; i++ {
		t := time.Now()
		if _, err := fetch(ctx, client, cfg.url+"/"); err != nil {
			return err
		}
		rtts = append(rtts, float64(time.Since(t).Microseconds()))
	}
	slices.Sort(rtts)
	res.RTTMedianMicros = rtts[len(rtts)/2]
	res.RTTP99Micros = rtts[min(len(rtts)-1, len(rtts)*99/100)]
	return json.NewEncoder(p.stdout).Encode(res)
}

// fetch GETs u and discards the body, returning its length.
func fetch(ctx context.Context, c *http.Client, u string) (int64, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return 0, err
	}
	resp, err := c.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	n, err := io.Copy(io.Discard, resp.Body)
	if err != nil {
		return n, fmt.Errorf("GET %s: read body after %d bytes: %w", u, n, err)
	}
	if resp.StatusCode != http.StatusOK {
		return n, fmt.Errorf("GET %s: %s", u, resp.Status)
	}
	return n, nil
}
