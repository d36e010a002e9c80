package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"
)

// errorBodyLimit caps how much of a non-2xx answer's body is quoted in
// the error message.
const errorBodyLimit = 512

// getConfig is the parsed command line of "labbox get".
type getConfig struct {
	url     string
	timeout time.Duration
	// upload > 0 POSTs that many bytes instead of a GET.
	upload int64
	// count prints the number of body bytes instead of the body.
	count bool
	// repeat > 1 sends that many requests, interval apart, printing one
	// line per request ("ok <body>" or "error <reason>") and never failing:
	// a pod that sends the moment it starts.
	repeat   int
	interval time.Duration
}

// parseGet parses the arguments of "labbox get".
func parseGet(fs *flag.FlagSet, args []string) (getConfig, error) {
	var cfg getConfig
	fs.DurationVar(&cfg.timeout, "timeout", 3*time.Second, "give up after `duration` (connect, send and read)")
	fs.Int64Var(&cfg.upload, "upload", 0, "POST `n` bytes instead of a GET")
	fs.BoolVar(&cfg.count, "count", false, "print the number of body bytes received, not the body")
	fs.IntVar(&cfg.repeat, "repeat", 1, "send `n` requests, one line of result each, and always exit 0")
	fs.DurationVar(&cfg.interval, "interval", 100*time.Millisecond, "pause between repeated requests")
	if err := parseFlags(fs, args); err != nil {
		return getConfig{}, err
	}
	if cfg.upload < 0 || cfg.repeat < 1 || cfg.interval < 0 {
		return getConfig{}, usagef("get: -upload, -repeat and -interval must not be negative, and -repeat at least 1")
	}
	if fs.NArg() != 1 {
		return getConfig{}, usagef("get takes exactly one URL after its flags, got %q", fs.Args())
	}
	if cfg.timeout <= 0 {
		return getConfig{}, usagef("get: -timeout must be positive, got %s", cfg.timeout)
	}
	cfg.url = fs.Arg(0)
	u, err := url.Parse(cfg.url)
	if err != nil {
		return getConfig{}, usagef("get: %v", err)
	}
	if u.Scheme != "http" && u.Scheme != "https" {
		return getConfig{}, usagef("get: URL %q must start with http:// or https://", cfg.url)
	}
	if u.Host == "" {
		return getConfig{}, usagef("get: URL %q has no host", cfg.url)
	}
	return cfg, nil
}

// runGet implements "labbox get": the client side of connectivity tests,
// run in a pod with kubectl exec. It prints the body of a 2xx answer to
// stdout and fails on anything else, so the exit code alone says whether
// the request got through.
func runGet(ctx context.Context, p proc, fs *flag.FlagSet, args []string) error {
	cfg, err := parseGet(fs, args)
	if err != nil {
		return err
	}
	if cfg.repeat == 1 {
		return get(ctx, cfg, p.stdout)
	}
	for i := 0; i < cfg.repeat; i++ {
		var body strings.Builder
		if err := get(ctx, cfg, &body); err != nil {
			fmt.Fprintf(p.stdout, "error %v\n", err)
		} else {
			fmt.Fprintf(p.stdout, "ok %s\n", strings.TrimSpace(body.String()))
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(cfg.interval):
		}
	}
	return nil
}

// get performs one GET as cfg says and copies a 2xx body to out.
func get(ctx context.Context, cfg getConfig, out io.Writer) error {
	client := &http.Client{
		Timeout: cfg.timeout,
		Transport: &http.Transport{
			// Never a proxy: the lab must send no packet outside itself,
			// and a test is about the path this pod's packets take.
			Proxy:             nil,
			DisableKeepAlives: true,
		},
	}
	method, body := http.MethodGet, io.Reader(nil)
	if cfg.upload > 0 {
		method, body = http.MethodPost, io.LimitReader(zeros{}, cfg.upload)
	}
	req, err := http.NewRequestWithContext(ctx, method, cfg.url, body)
	if cfg.upload > 0 {
		req.ContentLength = cfg.upload
	}
	if err != nil {
		return fmt.Errorf("GET %s: %w", cfg.url, err)
	}
	resp, err := client.Do(req)
	if err != nil {
		// err already reads "Get \"URL\": ...".
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		snippet, _ := io.ReadAll(io.LimitReader(resp.Body, errorBodyLimit))
		return fmt.Errorf("GET %s: %s: %q", cfg.url, resp.Status, strings.TrimSpace(string(snippet)))
	}
	if cfg.count {
		n, err := io.Copy(io.Discard, resp.Body)
		if err != nil {
			return fmt.Errorf("GET %s: read body after %d bytes: %w", cfg.url, n, err)
		}
		fmt.Fprintf(out, "%d\n", n)
		return nil
	}
	if _, err := io.Copy(out, resp.Body); err != nil {
		return fmt.Errorf("GET %s: read body: %w", cfg.url, err)
	}
	return nil
}

// zeros is an endless source of zero bytes, for uploads.
type zeros struct{}

func (zeros) Read(p []byte) (int, error) {
	clear(p)
	return len(p), nil
}
