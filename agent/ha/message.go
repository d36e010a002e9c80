package ha

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"sync"
	"time"
)

// message is what a node says on the HA port: who it is, which floating
// IPs it holds now and at which epoch, and which peers it hears. Gateways
// send it to the other members of their groups every Interval (the
// heartbeat); a node that starts holding an IP also pushes it to every
// node, so that workers re-point their tunnels at once.
type message struct {
	Node string `json:"node"`
	// Boot is random per agent start, Seq counts up within it and Time is
	// the sender's clock: together they reject replays (see replayGuard).
	Boot uint64 `json:"boot"`
	Seq  uint64 `json:"seq"`
	Time int64  `json:"time"`
	// Holds maps each floating IP the sender holds to its epoch.
	Holds map[netip.Addr]int64 `json:"holds,omitempty"`
	// Standbys names, for each IP the sender holds, its standby as the
	// sender knows it: the standby learns its duty from its holder too,
	// not only from its own view of the API, which may be stale (its
	// watches broken after a partition or a pause).
	Standbys map[netip.Addr]string `json:"standbys,omitempty"`
	// Hears are the peers the sender heard within DeadAfter.
	Hears []string `json:"hears,omitempty"`
	// Push marks a message sent to every node because the sender started
	// holding an IP.
	Push bool `json:"push,omitempty"`
}

// maxMessage bounds a datagram: 64 floating IPs per group and a few
// hundred peers fit many times over.
const maxMessage = 16 << 10

// macSize is the length of the HMAC-SHA256 that ends every datagram.
const macSize = sha256.Size

// seal encodes m and appends its HMAC under key.
func seal(key []byte, m message) ([]byte, error) {
	b, err := json.Marshal(m)
	if err != nil {
		return nil, fmt.Errorf("encode HA message: %w", err)
	}
	if len(b)+macSize > maxMessage {
		return nil, fmt.Errorf("HA message of %d bytes exceeds %d", len(b)+macSize, maxMessage)
	}
	mac := hmac.New(sha256.New, key)
	mac.Write(b)
	return mac.Sum(b), nil
}

// errBadMAC says a datagram was not sealed with the group's key.
var errBadMAC = errors.New("HA message: bad MAC (not sealed with this cluster's key)")

// open checks a datagram's HMAC under key and decodes it.
func open(key, b []byte) (message, error) {
	var m message
	if len(b) <= macSize || len(b) > maxMessage {
		return m, fmt.Errorf("HA message: %d bytes is no sealed message", len(b))
	}
	body, sum := b[:len(b)-macSize], b[len(b)-macSize:]
	mac := hmac.New(sha256.New, key)
	mac.Write(body)
	if !hmac.Equal(sum, mac.Sum(nil)) {
		return m, errBadMAC
	}
	if err := json.Unmarshal(body, &m); err != nil {
		return m, fmt.Errorf("HA message: %w", err)
	}
	if m.Node == "" {
		return m, errors.New("HA message: no sender")
	}
	return m, nil
}

// maxSkew is how far a message's time may be from the receiver's clock.
// Nodes of a cluster keep their clocks in step (certificates and leases
// need it too); a message older than this is a replay.
const maxSkew = 5 * time.Second

// replayGuard accepts each sender's messages only in order: within one
// boot the sequence number must grow, and a new boot must be recent. A
// recorded datagram replayed later is refused either way.
type replayGuard struct {
	mu   sync.Mutex
	last map[string]bootSeq
}

type bootSeq struct {
	boot, seq uint64
	time      int64
}

// accept says whether m is new, and records it if so.
func (g *replayGuard) accept(m message, now time.Time) error {
	if d := now.Sub(time.Unix(0, m.Time)); d > maxSkew || d < -maxSkew {
		return fmt.Errorf("HA message from %s is %s off this node's clock (more than %s): a replay, or clocks out of step", m.Node, d.Round(time.Millisecond), maxSkew)
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.last == nil {
		g.last = map[string]bootSeq{}
	}
	prev, ok := g.last[m.Node]
	switch {
	case !ok:
	case m.Boot == prev.boot && m.Seq <= prev.seq:
		return fmt.Errorf("HA message from %s replayed (sequence %d after %d)", m.Node, m.Seq, prev.seq)
	case m.Boot != prev.boot && m.Time <= prev.time:
		return fmt.Errorf("HA message from %s of an older boot", m.Node)
	}
	g.last[m.Node] = bootSeq{boot: m.Boot, seq: m.Seq, time: m.Time}
	return nil
}
