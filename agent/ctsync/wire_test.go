package ctsync

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"golang.org/x/sys/unix"
)

var sampleEntries = []entry{{
	key:   tupleKey{proto: unix.IPPROTO_TCP, src: podIP, dst: serverIP, srcPort: 40000, dstPort: 443},
	natIP: floatIP, natPort: 40001, mark: markPol1, timeout: 431999, status: 0x18e,
	tcpState: 3, tcpFlagsOrig: 0x23, tcpFlagsRep: 0x33, wscaleOrig: 7, wscaleRep: 9,
}, {
	key:   tupleKey{proto: unix.IPPROTO_UDP, src: podIP2, dst: serverIP, srcPort: 53000, dstPort: 53},
	natIP: floatIP, natPort: 53000, mark: markPol2, timeout: 29, status: 0x198,
}}

var cmpEntry = cmp.AllowUnexported(entry{}, tupleKey{}, message{})

func TestMessageRoundTrip(t *testing.T) {
	seen := time.Unix(1700000000, 123456789)
	for _, m := range []message{
		{kind: kindHeartbeat, seen: seen},
		{kind: kindDumpStart, seen: seen},
		{kind: kindDumpEnd, seen: seen},
		{kind: kindUpsert, seen: seen, entries: sampleEntries},
		{kind: kindDelete, seen: seen, entries: sampleEntries[:1]},
	} {
		got, err := decodeMessage(encodeMessage(m))
		if err != nil {
			t.Fatalf("kind %d: %v", m.kind, err)
		}
		if diff := cmp.Diff(m, got, cmpEntry, cmp.Comparer(func(a, b netip.Addr) bool { return a == b }),
			cmp.Comparer(func(a, b time.Time) bool { return a.Equal(b) })); diff != "" {
			t.Errorf("kind %d round trip (-sent +decoded):\n%s", m.kind, diff)
		}
	}
}

func TestDecodeMessageRejects(t *testing.T) {
	valid := encodeMessage(message{kind: kindUpsert, seen: time.Now(), entries: sampleEntries[:1]})
	with := func(off int, b byte) []byte {
		c := bytes.Clone(valid)
		c[off] = b
		return c
	}
	udp := encodeMessage(message{kind: kindUpsert, entries: sampleEntries[1:]})
	udp[messageHeader+2] = 1 // TCP flags, original direction
	for name, b := range map[string][]byte{
		"a UDP entry with TCP flags":        udp,
		"an empty payload":                  nil,
		"an unknown kind":                   with(0, 99),
		"an upsert without entries":         valid[:messageHeader],
		"a truncated entry":                 valid[:len(valid)-1],
		"a heartbeat with an entry":         with(0, kindHeartbeat),
		"an ICMP entry":                     with(messageHeader, unix.IPPROTO_ICMP),
		"a TCP state the kernel refuses":    with(messageHeader+1, tcpConntrackMax),
		"a window scale beyond RFC 7323":    with(messageHeader+4, maxWScale+1),
		"more entries than a frame carries": make([]byte, maxPayload+entrySize),
	} {
		if _, err := decodeMessage(b); err == nil {
			t.Errorf("%s: decoded", name)
		}
	}
}

// pipePair runs the handshake over an in-memory connection.
func pipePair(t *testing.T, serverKey, followerKey []byte) (sk, fk []byte, serr, ferr error) {
	t.Helper()
	a, b := net.Pipe()
	defer a.Close()
	defer b.Close()
	done := make(chan struct{})
	go func() {
		defer close(done)
		sk, serr = serverHandshake(a, serverKey)
		if serr != nil {
			a.Close()
		}
	}()
	fk, ferr = followerHandshake(b, followerKey)
	if ferr != nil {
		b.Close()
	}
	<-done
	return sk, fk, serr, ferr
}

func TestHandshake(t *testing.T) {
	t.Run("both ends derive one fresh session key", func(t *testing.T) {
		sk, fk, serr, ferr := pipePair(t, testKey, testKey)
		if serr != nil || ferr != nil {
			t.Fatalf("server: %v, follower: %v", serr, ferr)
		}
		if !bytes.Equal(sk, fk) {
			t.Fatal("session keys differ")
		}
		sk2, _, _, _ := pipePair(t, testKey, testKey)
		if bytes.Equal(sk, sk2) {
			t.Error("two sessions share a key")
		}
	})
	t.Run("a wrong key is rejected by both ends", func(t *testing.T) {
		other := []byte(strings.Repeat("x", 32))
		if _, _, _, ferr := pipePair(t, other, testKey); !errors.Is(ferr, errAuth) {
			t.Errorf("follower accepted a server with another key: %v", ferr)
		}
		// A follower that cannot check the server's proof never sends
		// its own; one that skips the check is refused by the server.
		a, b := net.Pipe()
		defer a.Close()
		go func() {
			defer b.Close()
			in := make([]byte, len(magic)+nonceSize+macSize)
			_, _ = b.Write(append([]byte(magic), make([]byte, nonceSize)...))
			_, _ = io.ReadFull(b, in)
			_, _ = b.Write(make([]byte, macSize))
		}()
		if _, err := serverHandshake(a, testKey); !errors.Is(err, errAuth) {
			t.Errorf("server accepted a follower without the key: %v", err)
		}
	})
}

func TestFrames(t *testing.T) {
	key := bytes.Repeat([]byte{1}, 32)
	var wire bytes.Buffer
	fw := newFrameWriter(&wire, key)
	payloads := [][]byte{[]byte("first"), []byte("second"), {}}
	var frames [][]byte
	for _, p := range payloads {
		before := wire.Len()
		if err := fw.write(p); err != nil {
			t.Fatal(err)
		}
		frames = append(frames, bytes.Clone(wire.Bytes()[before:]))
	}
	read := func(frames ...[]byte) ([][]byte, error) {
		fr := newFrameReader(bytes.NewReader(bytes.Join(frames, nil)), key)
		var got [][]byte
		for {
			p, err := fr.read()
			if errors.Is(err, io.EOF) {
				return got, nil
			}
			if err != nil {
				return got, err
			}
			got = append(got, bytes.Clone(p))
		}
	}

	t.Run("frames in order are read", func(t *testing.T) {
		got, err := read(frames...)
		if err != nil || len(got) != 3 || string(got[1]) != "second" {
			t.Fatalf("got %q, %v", got, err)
		}
	})
	t.Run("a replayed frame is rejected", func(t *testing.T) {
		if _, err := read(frames[0], frames[1], frames[1]); !errors.Is(err, errAuth) {
			t.Errorf("replay: %v", err)
		}
	})
	t.Run("a dropped frame is rejected", func(t *testing.T) {
		if _, err := read(frames[0], frames[2]); !errors.Is(err, errAuth) {
			t.Errorf("gap: %v", err)
		}
	})
	t.Run("a flipped bit is rejected", func(t *testing.T) {
		bad := bytes.Clone(frames[0])
		bad[frameHeader] ^= 1
		if _, err := read(bad); !errors.Is(err, errAuth) {
			t.Errorf("tampered payload: %v", err)
		}
	})
	t.Run("another session's key is rejected", func(t *testing.T) {
		fr := newFrameReader(bytes.NewReader(frames[0]), bytes.Repeat([]byte{2}, 32))
		if _, err := fr.read(); !errors.Is(err, errAuth) {
			t.Errorf("wrong key: %v", err)
		}
	})
	t.Run("an oversize frame is rejected before it is read", func(t *testing.T) {
		h := binary.BigEndian.AppendUint32(nil, maxPayload+1)
		h = binary.BigEndian.AppendUint64(h, 0)
		if _, err := read(h); !errors.Is(err, errAuth) {
			t.Errorf("oversize: %v", err)
		}
	})
}

func FuzzDecodeMessage(f *testing.F) {
	f.Add(encodeMessage(message{kind: kindUpsert, seen: time.Unix(1, 0), entries: sampleEntries}))
	f.Add(encodeMessage(message{kind: kindDumpEnd}))
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := decodeMessage(b)
		if err != nil {
			return
		}
		// What decodes encodes back to the same bytes.
		if again := encodeMessage(m); !bytes.Equal(again, b) {
			t.Fatalf("re-encoded %x, decoded from %x", again, b)
		}
	})
}

func FuzzReadFrame(f *testing.F) {
	key := bytes.Repeat([]byte{1}, 32)
	var wire bytes.Buffer
	_ = newFrameWriter(&wire, key).write([]byte("payload"))
	f.Add(wire.Bytes())
	f.Fuzz(func(t *testing.T, b []byte) {
		fr := newFrameReader(bytes.NewReader(b), key)
		for range 4 {
			p, err := fr.read()
			if err != nil {
				return
			}
			if len(p) > maxPayload {
				t.Fatalf("payload of %d bytes", len(p))
			}
		}
	})
}
