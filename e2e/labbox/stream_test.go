package main

import (
	"context"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"
)

// TestStreamCountsConnectionsAndGaps: a server that keeps its connection
// gives one connection and no failure; one that closes it after a few
// requests makes the stream open another, which the result shows.
func TestStreamCountsConnectionsAndGaps(t *testing.T) {
	var mu sync.Mutex
	served := 0
	breakAfter := 0 // 0: never
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		served++
		closeNow := breakAfter > 0 && served == breakAfter
		mu.Unlock()
		if closeNow {
			w.Header().Set("Connection", "close")
		}
		_, _ = w.Write([]byte("ok\n"))
	}))
	defer srv.Close()
	cfg := streamConfig{url: srv.URL, interval: 10 * time.Millisecond, duration: 200 * time.Millisecond, timeout: time.Second}

	res := stream(context.Background(), cfg)
	if res.requests < 5 || res.failed != 0 || res.connections != 1 {
		t.Errorf("steady server: %v, want several requests, no failure, one connection", res)
	}
	mu.Lock()
	served, breakAfter = 0, 3
	mu.Unlock()
	if res := stream(context.Background(), cfg); res.connections != 2 || res.failed != 0 {
		t.Errorf("server closing after 3 requests: %v, want two connections", res)
	}
	// A server that stops answering: requests fail and the gap grows.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	cfg.url, cfg.timeout = "http://"+ln.Addr().String()+"/", 20*time.Millisecond
	if res := stream(context.Background(), cfg); res.failed != res.requests || res.longestGap < 100*time.Millisecond {
		t.Errorf("silent server: %v, want every request failed and a long gap", res)
	}
}

func TestPullReadsEveryLineTheServerPushes(t *testing.T) {
	srv := httptest.NewServer(newEchoHandler(log.New(io.Discard, "", 0)))
	defer srv.Close()
	lines, gap, err := pull(context.Background(), srv.URL+"/drip/5/20")
	if err != nil || lines != 20 {
		t.Fatalf("pull = %d lines, %v; want 20", lines, err)
	}
	if gap <= 0 {
		t.Errorf("longest gap %s; want the time between pushes", gap)
	}
	if _, _, err := pull(context.Background(), srv.URL+"/drip/0/20"); err == nil {
		t.Error("a drip of 0 ms was accepted")
	}
}
