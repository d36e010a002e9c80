package nft

import (
	"errors"
	"fmt"
	"sync"

	"github.com/google/nftables"
	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"
)

// DefaultTableName is the name of the nsegress table.
const DefaultTableName = "nsegress"

// ErrPolicyNotProgrammed is returned (wrapped) by AddPod when the pod's
// policy has no chain on this node yet: Apply has not programmed it.
var ErrPolicyNotProgrammed = errors.New("policy is not programmed on this node")

// sendBufferBytes is the socket send buffer asked for: a whole Apply,
// with thousands of pod elements, is one netlink message batch and must
// fit in it (the default is about 200 KiB).
const sendBufferBytes = 8 << 20

// Option configures Open.
type Option func(*options)

type options struct {
	netnsFD int // -1: the caller's network namespace
	name    string
}

// WithNetNS makes the Table work in the network namespace that fd (an
// open /proc/…/ns/net or netns handle) refers to. The fd must stay open
// until Close.
func WithNetNS(fd int) Option {
	return func(o *options) { o.netnsFD = fd }
}

// WithName names the table (default DefaultTableName); tests use it.
func WithName(table string) Option {
	return func(o *options) { o.name = table }
}

// Table is the nsegress table in one network namespace. Its methods are
// safe for concurrent use; each is one netlink transaction (reads
// aside), so concurrent users in other processes see either all or
// nothing of it.
type Table struct {
	mu    sync.Mutex
	opts  options
	conn  *nftables.Conn
	table *nftables.Table
}

// Open connects to nftables. It does not create the table: Apply does.
func Open(opts ...Option) (*Table, error) {
	o := options{netnsFD: -1, name: DefaultTableName}
	for _, opt := range opts {
		opt(&o)
	}
	if o.name == "" {
		return nil, errors.New("nft: open: table name is empty")
	}
	t := &Table{opts: o, table: &nftables.Table{Name: o.name, Family: nftables.TableFamilyIPv4}}
	if err := t.dial(); err != nil {
		return nil, err
	}
	return t, nil
}

// dial opens the lasting netlink connection.
func (t *Table) dial() error {
	copts := []nftables.ConnOption{nftables.AsLasting(), nftables.WithSockOptions(bigSendBuffer)}
	if t.opts.netnsFD >= 0 {
		copts = append(copts, nftables.WithNetNSFd(t.opts.netnsFD))
	}
	c, err := nftables.New(copts...)
	if err != nil {
		return fmt.Errorf("nft: open netlink connection: %w", err)
	}
	t.conn = c
	return nil
}

// bigSendBuffer raises the socket's send buffer to sendBufferBytes; as
// root SO_SNDBUFFORCE passes net.core.wmem_max. Failing that, the
// ordinary (capped) size is asked for; neither failure is fatal.
func bigSendBuffer(c *netlink.Conn) error {
	rc, err := c.SyscallConn()
	if err == nil {
		var serr error
		err = rc.Control(func(fd uintptr) {
			serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_SNDBUFFORCE, sendBufferBytes)
		})
		if err == nil && serr == nil {
			return nil
		}
	}
	// Without the bigger buffer a large Apply is only slower.
	_ = c.SetWriteBuffer(sendBufferBytes)
	return nil
}

// Close closes the netlink connection.
func (t *Table) Close() error {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.conn.CloseLasting()
}

// Name returns the table's name.
func (t *Table) Name() string { return t.table.Name }

// Delete removes the ip table and the bridge table beside it; an absent
// table is success.
func (t *Table) Delete() error {
	t.mu.Lock()
	defer t.mu.Unlock()
	for _, table := range []*nftables.Table{t.table, t.bridgeTable()} {
		err := t.commit(func(c *nftables.Conn) error {
			c.DelTable(table)
			return nil
		})
		if err != nil && !errors.Is(err, unix.ENOENT) {
			return fmt.Errorf("nft: delete table %s: %w", table.Name, err)
		}
	}
	return nil
}

// commit queues one transaction with queue and sends it. If queue fails
// nothing is sent: the connection is replaced, which drops the queued
// messages (google/nftables cannot discard them otherwise).
func (t *Table) commit(queue func(*nftables.Conn) error) error {
	if err := queue(t.conn); err != nil {
		// The connection is replaced either way; the queue error matters.
		_ = t.conn.CloseLasting()
		if derr := t.dial(); derr != nil {
			return errors.Join(err, derr)
		}
		return err
	}
	return t.conn.Flush()
}

// exists reports whether the table exists.
func (t *Table) exists() (bool, error) {
	_, err := t.conn.ListTableOfFamily(t.table.Name, t.table.Family)
	switch {
	case err == nil:
		return true, nil
	case errors.Is(err, unix.ENOENT):
		return false, nil
	}
	return false, fmt.Errorf("nft: look up table ip %s: %w", t.table.Name, err)
}

// podsSet is the pods map bound to this table.
func (t *Table) podsSet() *nftables.Set {
	m := podsMap()
	m.Table = t.table
	return &m
}
