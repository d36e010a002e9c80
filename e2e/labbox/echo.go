package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// shutdownGrace bounds how long "labbox echo" waits for requests in
// flight after SIGTERM; the kubelet's own grace period is longer.
const shutdownGrace = 5 * time.Second

// echoConfig is the parsed command line of "labbox echo".
type echoConfig struct {
	listen string
	// countMarkers counts the marked packets the host receives and
	// serves the counts on GET /markers?marker=M.
	countMarkers bool
}

// parseEcho parses the arguments of "labbox echo".
func parseEcho(fs *flag.FlagSet, args []string) (echoConfig, error) {
	var cfg echoConfig
	fs.StringVar(&cfg.listen, "listen", ":8080", "`address` to listen on")
	fs.BoolVar(&cfg.countMarkers, "count-markers", false,
		"count received TCP and UDP packets carrying a marker (needs CAP_NET_RAW) and serve GET /markers?marker=M")
	if err := parseFlags(fs, args); err != nil {
		return echoConfig{}, err
	}
	if fs.NArg() != 0 {
		return echoConfig{}, usagef("echo takes no arguments, got %q", fs.Args())
	}
	if _, _, err := net.SplitHostPort(cfg.listen); err != nil {
		return echoConfig{}, usagef("echo: -listen %q: %v", cfg.listen, err)
	}
	return cfg, nil
}

// runEcho implements "labbox echo": the lab's backends and in-cluster
// servers, which tell each caller the source IP they saw (docs/design.md §6: each
// backend answers with the caller's source IP, which is how a test sees
// which egress IP a pod's traffic left with).
func runEcho(ctx context.Context, p proc, fs *flag.FlagSet, args []string) error {
	cfg, err := parseEcho(fs, args)
	if err != nil {
		return err
	}
	// Listen before serving so that a taken port fails the command at once.
	ln, err := net.Listen("tcp", cfg.listen)
	if err != nil {
		return fmt.Errorf("listen on %s: %w", cfg.listen, err)
	}
	logger := log.New(p.stdout, "", log.LstdFlags|log.LUTC)
	handler := newEchoHandler(logger)
	if cfg.countMarkers {
		counter := newMarkerCounter()
		if err := counter.listen(ctx); err != nil {
			ln.Close()
			return err
		}
		handler = withMarkers(handler, counter)
		logger.Printf("counting markers")
	}
	logger.Printf("listening on %s", ln.Addr())
	srv := &http.Server{
		Handler:           handler,
		ReadHeaderTimeout: 10 * time.Second,
		ErrorLog:          log.New(p.stderr, "", log.LstdFlags|log.LUTC),
	}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()

	select {
	case err := <-served:
		return fmt.Errorf("serve on %s: %w", ln.Addr(), err)
	case <-ctx.Done():
	}
	shutdownCtx, cancel := context.WithTimeout(context.Background(), shutdownGrace)
	defer cancel()
	if err := srv.Shutdown(shutdownCtx); err != nil {
		return fmt.Errorf("shut down server on %s: %w", ln.Addr(), err)
	}
	if err := <-served; !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("serve on %s: %w", ln.Addr(), err)
	}
	logger.Printf("stopped")
	return nil
}

// newEchoHandler returns the handler of "labbox echo": every request, on
// any path and with any method, gets the caller's source IP and a newline
// as text/plain. Two forms move bulk data, for MTU tests: GET /bytes/N
// answers N zero bytes, and a request with a body is read to its end and
// answered with the source IP and the number of bytes received. Each
// request is logged as one line to logger, so that kubectl logs shows who
// called.
func newEchoHandler(logger *log.Logger) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ip := sourceIP(r.RemoteAddr)
		logger.Printf("%s %s %s from %s", r.Method, r.Host, r.URL.RequestURI(), ip)
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		if n, ok := strings.CutPrefix(r.URL.Path, "/bytes/"); ok {
			size, err := strconv.ParseInt(n, 10, 64)
			if err != nil || size < 0 || size > maxBytes {
				http.Error(w, fmt.Sprintf("/bytes/N takes 0 <= N <= %d", maxBytes), http.StatusBadRequest)
				return
			}
			w.Header().Set("Content-Length", strconv.FormatInt(size, 10))
			io.CopyN(w, zeroReader{}, size)
			return
		}
		if spec, ok := strings.CutPrefix(r.URL.Path, "/drip/"); ok {
			drip(w, r, spec)
			return
		}
		if r.Body != nil && r.ContentLength != 0 {
			got, err := io.Copy(io.Discard, r.Body)
			if err != nil {
				http.Error(w, fmt.Sprintf("read body after %d bytes: %v", got, err), http.StatusBadRequest)
				return
			}
			fmt.Fprintf(w, "%s %d\n", ip, got)
			return
		}
		io.WriteString(w, ip+"\n")
	})
}

// drip answers GET /drip/MS/N: N lines, one every MS milliseconds, each
// flushed at once: a server that pushes over a long-lived connection,
// whose next segment comes when the server decides, not when the client
// asks.
func drip(w http.ResponseWriter, r *http.Request, spec string) {
	ms, n, ok := strings.Cut(spec, "/")
	every, err1 := strconv.Atoi(ms)
	count, err2 := strconv.Atoi(n)
	if !ok || err1 != nil || err2 != nil || every < 1 || every > 60000 || count < 1 || count > 1<<20 {
		http.Error(w, "/drip/MS/N takes 1 <= MS <= 60000 and 1 <= N <= 1048576", http.StatusBadRequest)
		return
	}
	flusher, _ := w.(http.Flusher)
	tick := time.NewTicker(time.Duration(every) * time.Millisecond)
	defer tick.Stop()
	for i := range count {
		if _, err := fmt.Fprintf(w, "%d\n", i); err != nil {
			return // the client went away
		}
		if flusher != nil {
			flusher.Flush()
		}
		if i+1 < count {
			select {
			case <-r.Context().Done():
				return
			case <-tick.C:
			}
		}
	}
}

// maxBytes caps GET /bytes/N.
const maxBytes = 1 << 30

type zeroReader struct{}

func (zeroReader) Read(p []byte) (int, error) {
	clear(p)
	return len(p), nil
}

// sourceIP returns the host part of an http.Request's RemoteAddr
// ("198.18.1.5:41234" gives "198.18.1.5", "[2001:db8::1]:80" gives
// "2001:db8::1"); an address without a port is returned as it is.
func sourceIP(remoteAddr string) string {
	host, _, err := net.SplitHostPort(remoteAddr)
	if err != nil {
		return remoteAddr
	}
	return host
}
