package main

import (
	"bytes"
	"context"
	"encoding/binary"
	"net"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nsegress/nsegress/e2e/privtest"
)

func TestParseForge(t *testing.T) {
	base := []string{"-gateway", "198.51.100.21", "-inner-src", "198.18.1.5", "-dst", "203.0.113.11:80", "-marker", "m1"}
	tests := []struct {
		name       string
		args       []string
		wantVNIs   []uint32
		wantProtos []string
		wantErr    bool
	}{
		{name: "VNIs may be repeated and comma-separated", args: append([]string{"-vni", "4097", "-vni", "8194,0x3003"}, base...),
			wantVNIs: []uint32{4097, 8194, 0x3003}, wantProtos: []string{"udp"}},
		{name: "both protocols may be asked for", args: append([]string{"-vni", "1", "-proto", "udp,tcp"}, base...),
			wantVNIs: []uint32{1}, wantProtos: []string{"udp", "tcp"}},
		{name: "no VNI is refused", args: base, wantErr: true},
		{name: "a VNI beyond 24 bits is refused", args: append([]string{"-vni", "16777216"}, base...), wantErr: true},
		{name: "an unknown protocol is refused", args: append([]string{"-vni", "1", "-proto", "icmp"}, base...), wantErr: true},
		{name: "a marker with a space is refused", args: append(append([]string{"-vni", "1"}, base...), "-marker", "a b"), wantErr: true},
		{name: "a gateway that is not IPv4 is refused", args: append(append([]string{"-vni", "1"}, base...), "-gateway", "gw-1"), wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg, err := parseForge(testFlagSet(t, "forge"), tt.args)
			if (err != nil) != tt.wantErr {
				t.Fatalf("parseForge(%q) error = %v, want error: %v", tt.args, err, tt.wantErr)
			}
			if tt.wantErr {
				return
			}
			if !slicesEqual(cfg.vnis, tt.wantVNIs) || strings.Join(cfg.protos, ",") != strings.Join(tt.wantProtos, ",") {
				t.Errorf("vnis %v protos %v, want %v %v", cfg.vnis, cfg.protos, tt.wantVNIs, tt.wantProtos)
			}
		})
	}
}

func slicesEqual[T comparable](a, b []T) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// TestForgeSendsWhatAGatewaysTunnelDeviceWouldDecapsulate receives what
// "labbox forge" sends on a local UDP socket and reads it back as the
// gateway's kernel would: VXLAN header, frame to the gateway's device
// MAC, IPv4 packet with valid checksums and the marker as payload.
func TestForgeSendsWhatAGatewaysTunnelDeviceWouldDecapsulate(t *testing.T) {
	ln, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	port := ln.LocalAddr().(*net.UDPAddr).Port
	var stdout bytes.Buffer
	p := proc{stdout: &stdout, stderr: tWriter{t}, getenv: func(string) string { return "" }}
	args := []string{"-gateway", "127.0.0.1", "-port", strconv.Itoa(port), "-vni", "0x2a003", "-proto", "udp,tcp",
		"-inner-src", "198.18.1.5", "-dst", "203.0.113.11:80", "-marker", "forged-1", "-count", "1"}
	if err := runForge(context.Background(), p, testFlagSet(t, "forge"), args); err != nil {
		t.Fatal(err)
	}
	if want := "vni 172035 udp: sent 1, refused 0\nvni 172035 tcp: sent 1, refused 0\n"; stdout.String() != want {
		t.Errorf("stdout = %q, want %q", stdout.String(), want)
	}
	_ = ln.SetReadDeadline(time.Now().Add(5 * time.Second))
	for _, proto := range []string{"udp", "tcp"} {
		buf := make([]byte, 2048)
		n, _, err := ln.ReadFrom(buf)
		if err != nil {
			t.Fatal(err)
		}
		d := buf[:n]
		if d[0] != 0x08 || uint32(d[4])<<16|uint32(d[5])<<8|uint32(d[6]) != 0x2a003 {
			t.Errorf("%s: VXLAN header % x, want flags 08 and VNI 0x2a003", proto, d[:8])
		}
		frame := d[8:]
		if got := net.HardwareAddr(frame[0:6]).String(); got != "02:6e:7f:00:00:01" {
			t.Errorf("%s: frame to %s, want the gateway's device MAC 02:6e:7f:00:00:01", proto, got)
		}
		if frame[12] != 0x08 || frame[13] != 0x00 {
			t.Errorf("%s: EtherType % x, want IPv4", proto, frame[12:14])
		}
		ip := frame[14:]
		if checksum(0, ip[:20]) != 0 {
			t.Errorf("%s: bad IPv4 header checksum", proto)
		}
		if src, dst := netip.AddrFrom4([4]byte(ip[12:16])), netip.AddrFrom4([4]byte(ip[16:20])); src.String() != "198.18.1.5" || dst.String() != "203.0.113.11" {
			t.Errorf("%s: inner %s -> %s", proto, src, dst)
		}
		seg := ip[20:binary.BigEndian.Uint16(ip[2:])]
		if l4Checksum(netip.AddrFrom4([4]byte(ip[12:16])), netip.AddrFrom4([4]byte(ip[16:20])), ip[9], seg) != 0 {
			t.Errorf("%s: bad transport checksum", proto)
		}
		if binary.BigEndian.Uint16(seg[2:]) != 80 {
			t.Errorf("%s: inner destination port %d, want 80", proto, binary.BigEndian.Uint16(seg[2:]))
		}
		if m, ok := markerOf(proto, seg); !ok || m != "forged-1" {
			t.Errorf("%s: marker %q, %v; want forged-1", proto, m, ok)
		}
	}
}

func TestMarkerOfReadsOnlyMarkedPayloads(t *testing.T) {
	src, dst := netip.MustParseAddrPort("198.18.1.5:40000"), netip.MustParseAddrPort("203.0.113.11:80")
	tests := []struct {
		name    string
		proto   string
		payload string
		want    string
		wantOK  bool
	}{
		{name: "a marked UDP datagram", proto: "udp", payload: markerMagic + "abc", want: "abc", wantOK: true},
		{name: "a marked TCP SYN", proto: "tcp", payload: markerMagic + "abc", want: "abc", wantOK: true},
		{name: "an HTTP request is not counted", proto: "tcp", payload: "GET / HTTP/1.1\r\n\r\n"},
		{name: "an empty marker is not counted", proto: "udp", payload: markerMagic},
		{name: "an empty segment is not counted", proto: "tcp", payload: ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			seg := innerPacket(tt.proto, src, dst, 1, []byte(tt.payload))[20:]
			got, ok := markerOf(tt.proto, seg)
			if got != tt.want || ok != tt.wantOK {
				t.Errorf("markerOf = %q, %v; want %q, %v", got, ok, tt.want, tt.wantOK)
			}
		})
	}
	if _, ok := markerOf("tcp", []byte{1, 2, 3}); ok {
		t.Error("a truncated TCP header was counted")
	}
}

// TestEchoCountsMarkersThatReachTheHost runs the echo server with
// -count-markers on the loopback and sends it marked packets over TCP
// and UDP, as the lab's control does. Raw sockets need CAP_NET_RAW.
func TestEchoCountsMarkersThatReachTheHost(t *testing.T) {
	privtest.Require(t) // raw sockets need CAP_NET_RAW
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	stdout := &privtest.SyncBuffer{}
	p := proc{stdout: stdout, stderr: tWriter{t}, getenv: func(string) string { return "" }}
	done := make(chan error, 1)
	go func() {
		done <- runEcho(ctx, p, testFlagSet(t, "echo"), []string{"-listen", "127.0.0.1:0", "-count-markers"})
	}()
	addr := waitForListenLine(t, stdout, done)
	// Unique markers: other tests of the machine may send to the loopback.
	marker := "unit-" + strconv.Itoa(os.Getpid())
	send := func(proto, dst string) {
		t.Helper()
		var out bytes.Buffer
		sp := proc{stdout: &out, stderr: tWriter{t}, getenv: p.getenv}
		if err := runSendMarker(ctx, sp, testFlagSet(t, "send-marker"), []string{"-proto", proto, "-dst", dst, "-marker", marker}); err != nil {
			t.Fatalf("send-marker %s: %v", proto, err)
		}
	}
	count := func(m string) string {
		t.Helper()
		var body bytes.Buffer
		if err := get(ctx, getConfig{url: "http://" + addr + "/markers?marker=" + m, timeout: 5 * time.Second}, &body); err != nil {
			t.Fatal(err)
		}
		return strings.TrimSpace(body.String())
	}
	if got := count(marker); got != "0" {
		t.Fatalf("before sending: %s, want 0", got)
	}
	send("tcp", addr)
	send("udp", "127.0.0.1:9") // nobody listens: the raw socket sees it anyway
	deadline := time.Now().Add(5 * time.Second)
	for count(marker) != "2" && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	if got := count(marker); got != "2" {
		t.Errorf("count after a TCP and a UDP marker = %s, want 2", got)
	}
	if got := count(marker[:4] + "&prefix=" + marker[:4]); got != "2" {
		t.Errorf("count of the markers starting with %q = %s, want 2", marker[:4], got)
	}
	if got := count("other"); got != "0" {
		t.Errorf("count of a marker never sent = %s, want 0", got)
	}
	var body bytes.Buffer
	if err := get(ctx, getConfig{url: "http://" + addr + "/", timeout: 5 * time.Second}, &body); err != nil || body.String() != "127.0.0.1\n" {
		t.Errorf("the echo answer beside the counter: %q, %v", body.String(), err)
	}
}
