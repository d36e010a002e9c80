package main

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
)

// maxMarkers bounds how many distinct markers a counter keeps.
const maxMarkers = 4096

// markerCounter counts, per marker, the IPv4 TCP and UDP packets this host
// received whose payload starts with markerMagic. It reads raw sockets, so
// it sees packets whatever their port, and TCP SYNs whose data the kernel
// discards: a forged SYN that got through counts as much as a datagram.
type markerCounter struct {
	mu     sync.Mutex
	counts map[string]int64
}

func newMarkerCounter() *markerCounter { return &markerCounter{counts: map[string]int64{}} }

// count returns how many packets carried marker.
func (c *markerCounter) count(marker string) int64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.counts[marker]
}

// countPrefix returns how many packets carried a marker starting with
// prefix: one question for every marker of a test run.
func (c *markerCounter) countPrefix(prefix string) int64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	var n int64
	for m, k := range c.counts {
		if strings.HasPrefix(m, prefix) {
			n += k
		}
	}
	return n
}

// observe counts one transport segment (header included) of protocol
// proto ("tcp" or "udp").
func (c *markerCounter) observe(proto string, segment []byte) {
	m, ok := markerOf(proto, segment)
	if !ok {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if _, seen := c.counts[m]; seen || len(c.counts) < maxMarkers {
		c.counts[m]++
	}
}

// markerOf returns the marker a TCP or UDP segment's payload carries.
func markerOf(proto string, segment []byte) (string, bool) {
	var payload []byte
	switch proto {
	case "tcp":
		if len(segment) < 20 {
			return "", false
		}
		off := int(segment[12]>>4) * 4
		if off < 20 || off > len(segment) {
			return "", false
		}
		payload = segment[off:]
	case "udp":
		if len(segment) < 8 {
			return "", false
		}
		payload = segment[8:]
	default:
		return "", false
	}
	rest, ok := bytes.CutPrefix(payload, []byte(markerMagic))
	if !ok {
		return "", false
	}
	if len(rest) > maxMarkerLen {
		rest = rest[:maxMarkerLen]
	}
	if checkMarker(string(rest)) != nil {
		return "", false
	}
	return string(rest), true
}

// listen opens one raw socket per protocol and counts what arrives until
// ctx ends. It needs CAP_NET_RAW.
func (c *markerCounter) listen(ctx context.Context) error {
	var conns []net.PacketConn
	for _, proto := range []string{"tcp", "udp"} {
		conn, err := net.ListenPacket("ip4:"+proto, "0.0.0.0")
		if err != nil {
			for _, c := range conns {
				c.Close()
			}
			return fmt.Errorf("open a raw %s socket to count markers: %w", proto, err)
		}
		conns = append(conns, conn)
		go func() {
			// ReadFrom on an IPv4 raw socket returns the packet without
			// its IP header.
			buf := make([]byte, 65536)
			for {
				n, _, err := conn.ReadFrom(buf)
				if err != nil {
					return
				}
				c.observe(proto, buf[:n])
			}
		}()
	}
	go func() {
		<-ctx.Done()
		for _, c := range conns {
			c.Close()
		}
	}()
	return nil
}

// handler answers GET /markers?marker=M with the number of packets that
// carried M, and GET /markers?prefix=P with the number that carried a
// marker starting with P, as a number and a newline.
func (c *markerCounter) handler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		q := r.URL.Query()
		m, count := q.Get("marker"), c.count
		if p := q.Get("prefix"); p != "" {
			m, count = p, c.countPrefix
		}
		if err := checkMarker(m); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		fmt.Fprintln(w, strconv.FormatInt(count(m), 10))
	})
}

// withMarkers serves /markers from c and everything else from h.
func withMarkers(h http.Handler, c *markerCounter) http.Handler {
	mux := http.NewServeMux()
	mux.Handle("/markers", c.handler())
	mux.Handle("/", h)
	return mux
}
