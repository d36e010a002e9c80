package main

import (
	"bufio"
	"context"
	"flag"
	"fmt"
	"net/http"
	"strings"
	"time"
)

// pullConfig is the parsed command line of "labbox pull".
type pullConfig struct {
	url                string
	interval, duration time.Duration
}

// runPull implements "labbox pull": one GET of the echo server's
// /drip/MS/N, the server pushing a line every interval for duration over
// one connection, then one line of summary: how many lines arrived of
// how many, the longest wait between two, and what ended the stream early
// if anything did. It measures a long-lived flow that the server drives,
// across an event (a gateway failing over). It exits 0 once started; the
// summary is the result.
func runPull(ctx context.Context, p proc, fs *flag.FlagSet, args []string) error {
	var cfg pullConfig
	fs.DurationVar(&cfg.interval, "interval", 50*time.Millisecond, "how often the server pushes a line")
	fs.DurationVar(&cfg.duration, "duration", 10*time.Second, "how long the server pushes")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if fs.NArg() != 1 || !strings.HasPrefix(fs.Arg(0), "http://") {
		return usagef("pull takes exactly one http:// URL (the echo server's root) after its flags, got %q", fs.Args())
	}
	if cfg.interval < time.Millisecond || cfg.duration < cfg.interval {
		return usagef("pull: -interval must be at least 1ms and -duration at least -interval")
	}
	cfg.url = strings.TrimSuffix(fs.Arg(0), "/")
	want := int(cfg.duration / cfg.interval)
	url := fmt.Sprintf("%s/drip/%d/%d", cfg.url, cfg.interval.Milliseconds(), want)
	// A connection that died without a reset would wait for ever: give up
	// half a minute after the server should have finished.
	ctx, cancel := context.WithTimeout(ctx, cfg.duration+30*time.Second)
	defer cancel()
	lines, gap, err := pull(ctx, url)
	msg := "none"
	if err != nil {
		msg = strings.ReplaceAll(err.Error(), " ", "_")
	}
	fmt.Fprintf(p.stdout, "lines %d of %d longest-gap-ms %d error %s\n", lines, want, gap.Milliseconds(), msg)
	return nil
}

func pull(ctx context.Context, url string) (int, time.Duration, error) {
	// Never a proxy: the lab sends nothing outside itself.
	client := &http.Client{Transport: &http.Transport{Proxy: nil}}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return 0, 0, err
	}
	resp, err := client.Do(req)
	if err != nil {
		return 0, 0, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return 0, 0, fmt.Errorf("%s", resp.Status)
	}
	var lines int
	var gap time.Duration
	last := time.Now()
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		lines++
		gap = max(gap, time.Since(last))
		last = time.Now()
	}
	return lines, gap, sc.Err()
}
