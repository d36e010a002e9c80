package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nsegress/nsegress/e2e/privtest"
)

func TestEchoHandler(t *testing.T) {
	tests := []struct {
		name       string
		method     string
		target     string
		remoteAddr string
		wantBody   string
		wantLog    string
	}{
		{
			name:       "a GET is answered with the caller's IPv4 address",
			method:     http.MethodGet,
			target:     "/",
			remoteAddr: "198.51.100.101:40312",
			wantBody:   "198.51.100.101\n",
			wantLog:    "GET example.com / from 198.51.100.101",
		},
		{
			name:       "an IPv6 caller gets its address without brackets",
			method:     http.MethodGet,
			target:     "/",
			remoteAddr: "[2001:db8::7]:5555",
			wantBody:   "2001:db8::7\n",
			wantLog:    "from 2001:db8::7",
		},
		{
			name:       "any path and method get the same answer",
			method:     http.MethodPost,
			target:     "/some/path?q=1",
			remoteAddr: "198.18.2.9:1000",
			wantBody:   "198.18.2.9\n",
			wantLog:    "POST example.com /some/path?q=1 from 198.18.2.9",
		},
		{
			name:       "a remote address without a port is echoed whole",
			method:     http.MethodGet,
			target:     "/",
			remoteAddr: "@unix",
			wantBody:   "@unix\n",
			wantLog:    "from @unix",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var logs bytes.Buffer
			h := newEchoHandler(log.New(&logs, "", 0))
			req := httptest.NewRequest(tt.method, tt.target, nil)
			req.RemoteAddr = tt.remoteAddr
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, req)

			if rec.Code != http.StatusOK {
				t.Errorf("status = %d, want 200", rec.Code)
			}
			if got := rec.Body.String(); got != tt.wantBody {
				t.Errorf("body = %q, want %q", got, tt.wantBody)
			}
			if ct := rec.Header().Get("Content-Type"); !strings.HasPrefix(ct, "text/plain") {
				t.Errorf("Content-Type = %q, want text/plain", ct)
			}
			if lines := strings.Count(logs.String(), "\n"); lines != 1 {
				t.Errorf("logged %d lines, want 1: %q", lines, logs.String())
			}
			if !strings.Contains(logs.String(), tt.wantLog) {
				t.Errorf("log = %q, want it to contain %q", logs.String(), tt.wantLog)
			}
		})
	}
}

func TestEchoServerAnswersOverTCPAndStopsOnSignal(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	stdout := &privtest.SyncBuffer{}
	p := proc{stdout: stdout, stderr: tWriter{t}, getenv: func(string) string { return "" }}
	done := make(chan error, 1)
	go func() {
		done <- runEcho(ctx, p, testFlagSet(t, "echo"), []string{"-listen", "127.0.0.1:0"})
	}()

	addr := waitForListenLine(t, stdout, done)
	var body bytes.Buffer
	if err := get(ctx, getConfig{url: "http://" + addr + "/", timeout: 5 * time.Second}, &body); err != nil {
		t.Fatalf("get from echo server: %v", err)
	}
	if body.String() != "127.0.0.1\n" {
		t.Errorf("body = %q, want %q", body.String(), "127.0.0.1\n")
	}

	cancel() // as SIGTERM does
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("runEcho after cancel = %v, want nil", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("runEcho did not return after cancel")
	}
}

// waitForListenLine waits for the echo server's "listening on ADDR" log
// line and returns ADDR.
func waitForListenLine(t *testing.T, out *privtest.SyncBuffer, done <-chan error) string {
	t.Helper()
	const marker = "listening on "
	var addr string
	privtest.Eventually(t, 10*time.Second, "a "+strconv.Quote(marker)+" line", func() (bool, error) {
		select {
		case err := <-done:
			t.Fatalf("runEcho returned early: %v", err)
		default:
		}
		s := out.String()
		if i := strings.Index(s, marker); i >= 0 {
			rest := s[i+len(marker):]
			if j := strings.IndexByte(rest, '\n'); j >= 0 {
				addr = rest[:j]
				return true, nil
			}
		}
		return false, fmt.Errorf("output %q", s)
	})
	return addr
}

func TestEchoMovesBulkData(t *testing.T) {
	srv := httptest.NewServer(newEchoHandler(log.New(io.Discard, "", 0)))
	defer srv.Close()
	var out strings.Builder
	if err := get(context.Background(), getConfig{url: srv.URL + "/bytes/3000000", timeout: 5 * time.Second, count: true}, &out); err != nil {
		t.Fatal(err)
	}
	if out.String() != "3000000\n" {
		t.Errorf("download counted %q, want 3000000", out.String())
	}
	out.Reset()
	if err := get(context.Background(), getConfig{url: srv.URL + "/", timeout: 5 * time.Second, upload: 2500000}, &out); err != nil {
		t.Fatal(err)
	}
	if !strings.HasSuffix(out.String(), " 2500000\n") || !strings.HasPrefix(out.String(), "127.0.0.1 ") {
		t.Errorf("upload answered %q, want the source IP and 2500000", out.String())
	}
}

func TestBenchMeasuresAgainstEcho(t *testing.T) {
	srv := httptest.NewServer(newEchoHandler(log.New(io.Discard, "", 0)))
	defer srv.Close()
	fs := testFlagSet(t, "bench")
	var out bytes.Buffer
	p := proc{stdout: &out, stderr: io.Discard}
	if err := runBench(context.Background(), p, fs, []string{"-bytes", "1000000", "-requests", "20", srv.URL}); err != nil {
		t.Fatal(err)
	}
	var res BenchResult
	if err := json.Unmarshal(out.Bytes(), &res); err != nil {
		t.Fatalf("output %q: %v", out.String(), err)
	}
	if res.Bytes != 1000000 || res.Mbps <= 0 || res.RTTMedianMicros <= 0 || res.RTTP99Micros < res.RTTMedianMicros {
		t.Errorf("bench result %+v", res)
	}
}
