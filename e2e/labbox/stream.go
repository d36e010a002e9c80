package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/http/httptrace"
	"strings"
	"time"
)

// streamConfig is the parsed command line of "labbox stream".
type streamConfig struct {
	url                         string
	interval, duration, timeout time.Duration
	// fresh opens a new connection for every request: what a client
	// making new connections sees, instead of a long-lived flow.
	fresh bool
	// trace prints a line per request before the summary: "req START END
	// ok|fail", the times in Unix nanoseconds, for benchmarks that place
	// requests against an event.
	trace bool
}

// streamResult is what "labbox stream" reports.
type streamResult struct {
	requests, failed int
	// connections counts the TCP connections the requests used: 1 when
	// the first connection carried every request, more when it broke.
	connections int
	// longestGap is the longest time between two successful requests
	// (or from the start to the first one).
	longestGap time.Duration
	// trace is every request, when asked for.
	trace []tracedRequest
}

type tracedRequest struct {
	start, end time.Time
	ok         bool
}

func (r streamResult) String() string {
	return fmt.Sprintf("requests %d failed %d connections %d longest-gap-ms %d",
		r.requests, r.failed, r.connections, r.longestGap.Milliseconds())
}

func parseStream(fs *flag.FlagSet, args []string) (streamConfig, error) {
	var cfg streamConfig
	fs.DurationVar(&cfg.interval, "interval", 100*time.Millisecond, "pause between requests")
	fs.DurationVar(&cfg.duration, "duration", 10*time.Second, "how long to stream")
	fs.DurationVar(&cfg.timeout, "timeout", time.Second, "give up on one request after `duration`")
	fs.BoolVar(&cfg.fresh, "fresh", false, "a new TCP connection for every request (default: one kept alive)")
	fs.BoolVar(&cfg.trace, "trace", false, `print "req START END ok|fail" (Unix ns) per request before the summary`)
	if err := parseFlags(fs, args); err != nil {
		return streamConfig{}, err
	}
	if fs.NArg() != 1 || !strings.HasPrefix(fs.Arg(0), "http://") {
		return streamConfig{}, usagef("stream takes exactly one http:// URL after its flags, got %q", fs.Args())
	}
	if cfg.interval <= 0 || cfg.duration <= 0 || cfg.timeout <= 0 {
		return streamConfig{}, usagef("stream: -interval, -duration and -timeout must be positive")
	}
	cfg.url = fs.Arg(0)
	return cfg, nil
}

// runStream implements "labbox stream": requests over one kept-alive TCP
// connection, interval apart, for duration, then one line of summary. It
// measures what a long-lived flow sees across an event (an agent
// restart, a primary recreating its devices): whether its connection
// survived and how long it got no answer. It always exits 0 once started;
// the summary is the result.
func runStream(ctx context.Context, p proc, fs *flag.FlagSet, args []string) error {
	cfg, err := parseStream(fs, args)
	if err != nil {
		return err
	}
	res := stream(ctx, cfg)
	for _, r := range res.trace {
		fmt.Fprintf(p.stdout, "req %d %d %s\n", r.start.UnixNano(), r.end.UnixNano(), map[bool]string{true: "ok", false: "fail"}[r.ok])
	}
	fmt.Fprintln(p.stdout, res)
	return nil
}

func stream(ctx context.Context, cfg streamConfig) streamResult {
	// One connection at most, kept alive; never a proxy (the lab sends
	// nothing outside itself).
	transport := &http.Transport{Proxy: nil, MaxConnsPerHost: 1, MaxIdleConnsPerHost: 1, IdleConnTimeout: time.Minute}
	defer transport.CloseIdleConnections()
	client := &http.Client{Transport: transport, Timeout: cfg.timeout}
	var res streamResult
	start := time.Now()
	lastOK := start
	trace := &httptrace.ClientTrace{GotConn: func(info httptrace.GotConnInfo) {
		if !info.Reused {
			res.connections++
		}
	}}
	for time.Since(start) < cfg.duration && ctx.Err() == nil {
		res.requests++
		began := time.Now()
		c := client
		if cfg.fresh {
			// A transport of its own per request: a dial still waiting for
			// its SYN's retransmission after its request timed out would
			// otherwise hold the transport's one connection slot, and the
			// next requests would wait for it instead of dialing anew.
			c = &http.Client{Transport: &http.Transport{Proxy: nil, DisableKeepAlives: true}, Timeout: cfg.timeout}
		}
		err := streamOnce(httptrace.WithClientTrace(ctx, trace), c, cfg.url)
		if cfg.trace {
			res.trace = append(res.trace, tracedRequest{start: began, end: time.Now(), ok: err == nil})
		}
		if err != nil {
			res.failed++
		} else {
			res.longestGap = max(res.longestGap, time.Since(lastOK))
			lastOK = time.Now()
		}
		select {
		case <-ctx.Done():
		case <-time.After(cfg.interval):
		}
	}
	res.longestGap = max(res.longestGap, time.Since(lastOK)-cfg.interval)
	return res
}

func streamOnce(ctx context.Context, client *http.Client, url string) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	resp, err := client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	// Read the body whole, so that the connection is reused.
	if _, err := io.Copy(io.Discard, resp.Body); err != nil {
		return err
	}
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%s", resp.Status)
	}
	return nil
}
