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
}

// parseGet parses the arguments of "labbox get".
func parseGet(fs *flag.FlagSet, args []string) (getConfig, error) {
	var cfg getConfig
	fs.DurationVar(&cfg.timeout, "timeout", 3*time.Second, "give up after `duration` (connect, send and read)")
	if err := parseFlags(fs, args); err != nil {
		return getConfig{}, err
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
	return get(ctx, cfg, p.stdout)
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
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, cfg.url, nil)
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
	if _, err := io.Copy(out, resp.Body); err != nil {
		return fmt.Errorf("GET %s: read body: %w", cfg.url, err)
	}
	return nil
}
