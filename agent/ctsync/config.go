package ctsync

import (
	"fmt"
	"time"
)

// Config is shared by both ends.
type Config struct {
	// Key authenticates the channel (HMAC-SHA256); at least 32 bytes.
	// Whoever knows it can inject NAT state into a gateway's conntrack
	// table (as a server its followers accept), or read which pods talk
	// to which destinations (as a follower): keep it as secret as the
	// node's credentials, and distinct per gateway group.
	Key []byte
	// MarkMask: only entries whose conntrack mark has a bit in MarkMask
	// are replicated (nsegress's policy bits, DefaultMarkMask when zero).
	// The follower applies the same test to what it receives.
	MarkMask uint32
	// Logf, when set, receives what goes wrong that the caller does not
	// see: sessions that end, entries that cannot be applied.
	Logf func(format string, args ...any)
}

// DefaultMarkMask selects the conntrack mark bits nsegress keeps policy
// IDs in.
const DefaultMarkMask = 0x0fff0000

// DefaultResyncEvery is Server.ResyncEvery's default.
const DefaultResyncEvery = 10 * time.Second

// Timing of a session. The server sends a heartbeat when it has sent
// nothing for heartbeatEvery; the follower gives up on a session that is
// silent for readTimeout and reconnects. The server gives up a write
// after writeTimeout, so that a follower that stops reading cannot stall
// it; handshakeTimeout bounds the handshake on both ends.
const (
	heartbeatEvery   = time.Second
	readTimeout      = 5 * heartbeatEvery
	writeTimeout     = 10 * time.Second
	handshakeTimeout = 5 * time.Second
	minBackoff       = 100 * time.Millisecond
	maxBackoff       = 2 * time.Second
)

// check validates c and returns it with defaults filled in.
func (c Config) check() (Config, error) {
	if len(c.Key) < minKeySize {
		return c, fmt.Errorf("ctsync: key of %d bytes, need at least %d", len(c.Key), minKeySize)
	}
	if c.MarkMask == 0 {
		c.MarkMask = DefaultMarkMask
	}
	if c.Logf == nil {
		c.Logf = func(string, ...any) {}
	}
	return c, nil
}

// Stats are a Follower's counters since it was created.
type Stats struct {
	// Applied counts entries created or refreshed; Deleted entries
	// removed (DESTROY events, and what a full dump no longer had);
	// Failed entries the kernel or the mark test refused.
	Applied, Deleted, Failed uint64
	// LastLag is the time between the server reading the last applied
	// entries from the kernel (an event, or a full dump) and the
	// follower applying them; it includes any difference between the
	// two nodes' clocks.
	LastLag time.Duration
	// Connected says whether a session is up and authenticated.
	Connected bool
}
