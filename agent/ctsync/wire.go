package ctsync

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"hash"
	"io"
)

// The handshake (see doc.go). Each proof and the session key are
// HMAC-SHA256 under Key of a distinct label and both nonces: the labels
// keep a server's proof from being replayed as a follower's, the fresh
// nonces keep any proof or frame from being replayed in another session.
const (
	magic        = "nsgct/1\n"
	nonceSize    = 32
	macSize      = sha256.Size
	labelServer  = "nsegress ctsync server proof"
	labelClient  = "nsegress ctsync follower proof"
	labelSession = "nsegress ctsync session key"
	frameHeader  = 4 + 8 // payload length, sequence number
	// minKeySize is the shortest Config.Key accepted: a key shorter than
	// the HMAC's output would be its weakest part.
	minKeySize = 32
)

// errAuth is returned when the peer does not prove knowledge of Key, or
// a frame's MAC or sequence number is wrong.
var errAuth = errors.New("ctsync: authentication failed")

func mac(key []byte, label string, parts ...[]byte) []byte {
	h := hmac.New(sha256.New, key)
	h.Write([]byte(label))
	for _, p := range parts {
		h.Write(p)
	}
	return h.Sum(nil)
}

// followerHandshake runs the follower's side on rw and returns the
// session key.
func followerHandshake(rw io.ReadWriter, key []byte) ([]byte, error) {
	nc := make([]byte, nonceSize)
	if _, err := rand.Read(nc); err != nil {
		return nil, err
	}
	if _, err := rw.Write(append([]byte(magic), nc...)); err != nil {
		return nil, fmt.Errorf("send hello: %w", err)
	}
	in := make([]byte, len(magic)+nonceSize+macSize)
	if _, err := io.ReadFull(rw, in); err != nil {
		return nil, fmt.Errorf("read server hello: %w", err)
	}
	if string(in[:len(magic)]) != magic {
		return nil, fmt.Errorf("%w: not a ctsync server", errAuth)
	}
	ns := in[len(magic) : len(magic)+nonceSize]
	if !hmac.Equal(in[len(magic)+nonceSize:], mac(key, labelServer, nc, ns)) {
		return nil, fmt.Errorf("%w: server does not know the key", errAuth)
	}
	if _, err := rw.Write(mac(key, labelClient, nc, ns)); err != nil {
		return nil, fmt.Errorf("send proof: %w", err)
	}
	return mac(key, labelSession, nc, ns), nil
}

// serverHandshake runs the server's side on rw and returns the session
// key.
func serverHandshake(rw io.ReadWriter, key []byte) ([]byte, error) {
	in := make([]byte, len(magic)+nonceSize)
	if _, err := io.ReadFull(rw, in); err != nil {
		return nil, fmt.Errorf("read hello: %w", err)
	}
	if string(in[:len(magic)]) != magic {
		return nil, fmt.Errorf("%w: not a ctsync follower", errAuth)
	}
	nc := in[len(magic):]
	ns := make([]byte, nonceSize)
	if _, err := rand.Read(ns); err != nil {
		return nil, err
	}
	out := append(append([]byte(magic), ns...), mac(key, labelServer, nc, ns)...)
	if _, err := rw.Write(out); err != nil {
		return nil, fmt.Errorf("send hello: %w", err)
	}
	proof := make([]byte, macSize)
	if _, err := io.ReadFull(rw, proof); err != nil {
		return nil, fmt.Errorf("read proof: %w", err)
	}
	if !hmac.Equal(proof, mac(key, labelClient, nc, ns)) {
		return nil, fmt.Errorf("%w: follower does not know the key", errAuth)
	}
	return mac(key, labelSession, nc, ns), nil
}

// frameWriter writes frames: payload length (4 bytes), sequence number
// (8), payload, and HMAC-SHA256 under the session key of all that came
// before in the frame.
type frameWriter struct {
	w   io.Writer
	mac hash.Hash
	seq uint64
	buf []byte
}

func newFrameWriter(w io.Writer, sessionKey []byte) *frameWriter {
	return &frameWriter{w: w, mac: hmac.New(sha256.New, sessionKey)}
}

func (fw *frameWriter) write(payload []byte) error {
	if len(payload) > maxPayload {
		return fmt.Errorf("frame of %d bytes exceeds %d", len(payload), maxPayload)
	}
	b := binary.BigEndian.AppendUint32(fw.buf[:0], uint32(len(payload)))
	b = binary.BigEndian.AppendUint64(b, fw.seq)
	b = append(b, payload...)
	fw.mac.Reset()
	fw.mac.Write(b)
	b = fw.mac.Sum(b)
	fw.buf = b
	fw.seq++
	_, err := fw.w.Write(b)
	return err
}

// frameReader reads what frameWriter writes. It never holds more than
// one frame of at most maxPayload bytes, checks the MAC before it looks
// at the payload, and accepts only the next sequence number: a frame
// replayed, dropped or reordered ends the session.
type frameReader struct {
	r   io.Reader
	mac hash.Hash
	seq uint64
	buf []byte
}

func newFrameReader(r io.Reader, sessionKey []byte) *frameReader {
	return &frameReader{r: r, mac: hmac.New(sha256.New, sessionKey)}
}

// read returns the next payload; it is valid until the next read.
func (fr *frameReader) read() ([]byte, error) {
	var h [frameHeader]byte
	if _, err := io.ReadFull(fr.r, h[:]); err != nil {
		return nil, err
	}
	n := binary.BigEndian.Uint32(h[:4])
	if n > maxPayload {
		return nil, fmt.Errorf("%w: frame of %d bytes exceeds %d", errAuth, n, maxPayload)
	}
	if cap(fr.buf) < int(n)+macSize {
		fr.buf = make([]byte, int(n)+macSize)
	}
	b := fr.buf[:int(n)+macSize]
	if _, err := io.ReadFull(fr.r, b); err != nil {
		return nil, err
	}
	fr.mac.Reset()
	fr.mac.Write(h[:])
	fr.mac.Write(b[:n])
	if !hmac.Equal(fr.mac.Sum(nil), b[n:]) {
		return nil, fmt.Errorf("%w: bad frame MAC", errAuth)
	}
	if seq := binary.BigEndian.Uint64(h[4:]); seq != fr.seq {
		return nil, fmt.Errorf("%w: frame %d, want %d", errAuth, seq, fr.seq)
	}
	fr.seq++
	return b[:n], nil
}
