package nft

import (
	"errors"
	"fmt"

	"github.com/google/nftables"
	"golang.org/x/sys/unix"
)

// elemsPerMessage bounds the elements in one netlink message: a message's
// element list is one netlink attribute, at most 64 KiB long. A pods
// element takes about 70 bytes.
const elemsPerMessage = 256

// current is what Apply reads of the table before changing it.
type current struct {
	chains map[string]bool
	sets   map[string]bool
	pods   map[string]string // raw key -> jump target, see readPods
}

// Apply makes the table match s in one transaction: if it fails, nothing
// changed. Chains and the sets it owns are flushed and refilled; the pods
// map is changed by a diff against its current content, so a pod that
// stays is never absent and Apply of an unchanged State touches no pod
// element (its rules and sets are rewritten, atomically, to the same
// content).
// Objects of policies no longer in s are deleted, after the elements
// that jump to them.
func (t *Table) Apply(s State) error {
	if err := s.Validate(); err != nil {
		return err
	}
	want := build(s)
	t.mu.Lock()
	defer t.mu.Unlock()
	var err error
	for range raceAttempts {
		var cur current
		if cur, err = t.read(); err != nil {
			return err
		}
		// ENOENT or a clash: an AddPod/DelPod of another process changed
		// the pods map between read and write. Read again.
		err = t.commit(func(c *nftables.Conn) error { return t.queueApply(c, want, cur) })
		if err == nil || !(errors.Is(err, unix.ENOENT) || isElementClash(err)) {
			break
		}
	}
	if err != nil {
		return fmt.Errorf("nft: apply table ip %s: %w", t.table.Name, err)
	}
	return nil
}

// read lists the table's chains, sets and pods map elements.
func (t *Table) read() (current, error) {
	cur := current{chains: map[string]bool{}, sets: map[string]bool{}, pods: map[string]string{}}
	ok, err := t.exists()
	if err != nil || !ok {
		return cur, err
	}
	chains, err := t.conn.ListChainsOfTableFamily(t.table.Family)
	if err != nil {
		return cur, fmt.Errorf("nft: list chains: %w", err)
	}
	for _, c := range chains {
		if c.Table.Name == t.table.Name {
			cur.chains[c.Name] = true
		}
	}
	sets, err := t.conn.GetSets(t.table)
	if err != nil {
		return cur, fmt.Errorf("nft: list sets of table ip %s: %w", t.table.Name, err)
	}
	for _, s := range sets {
		cur.sets[s.Name] = true
	}
	if cur.sets[mapPods] {
		cur.pods, err = t.readPods()
	}
	return cur, err
}

// queueApply queues the transaction that turns cur into want. Order
// matters: sets before the rules and chains before the elements that
// refer to them; elements before the chains they jump to are deleted,
// and chains before the sets their rules look up.
func (t *Table) queueApply(c *nftables.Conn, want desired, cur current) error {
	c.AddTable(t.table)
	for _, ss := range want.sets {
		if err := t.queueSet(c, ss, cur.sets[ss.set.Name]); err != nil {
			return err
		}
	}
	pods := t.podsSet()
	if err := c.AddSet(pods, nil); err != nil {
		return fmt.Errorf("nft: add map %s: %w", mapPods, err)
	}
	wantChains := t.queueChains(c, want.chains, cur.chains)
	if err := queuePodsDiff(c, pods, want.pods, cur.pods); err != nil {
		return err
	}
	wantSets := map[string]bool{mapPods: true}
	for _, ss := range want.sets {
		wantSets[ss.set.Name] = true
	}
	t.queueStale(c, cur, wantChains, wantSets)
	return t.queueBridge(c, want.guards)
}

// queueSet adds a set Apply owns, or flushes it if it exists, and fills it.
func (t *Table) queueSet(c *nftables.Conn, ss setSpec, exists bool) error {
	s := ss.set
	s.Table = t.table
	if err := c.AddSet(&s, nil); err != nil {
		return fmt.Errorf("nft: add set %s: %w", s.Name, err)
	}
	if exists {
		c.FlushSet(&s)
	}
	return queueElems(c, &s, ss.elems, c.SetAddElements)
}

// queueChains adds each chain (flushing it if it exists) and its rules,
// and returns the set of wanted chain names.
func (t *Table) queueChains(c *nftables.Conn, chains []chainSpec, exists map[string]bool) map[string]bool {
	names := make(map[string]bool, len(chains))
	for _, cs := range chains {
		names[cs.name] = true
		ch := &nftables.Chain{Name: cs.name, Table: t.table, Hooknum: cs.hook, Priority: cs.prio, Type: cs.ctype}
		if cs.hook != nil {
			accept := nftables.ChainPolicyAccept
			ch.Policy = &accept
		}
		c.AddChain(ch)
		if exists[cs.name] {
			c.FlushChain(ch)
		}
		for _, r := range cs.rules {
			c.AddRule(&nftables.Rule{Table: t.table, Chain: ch, Exprs: r})
		}
	}
	return names
}

// queuePodsDiff deletes the elements that are stale or jump elsewhere,
// then adds the missing and changed ones: never a flush, which would
// leave running pods without their element for a moment (a leak).
func queuePodsDiff(c *nftables.Conn, m *nftables.Set, want map[PodKey]string, have map[string]string) error {
	var del, add []nftables.SetElement
	wantRaw := make(map[string]bool, len(want))
	for k, chain := range want {
		key := string(podKeyBytes(k))
		wantRaw[key] = true
		got, ok := have[key]
		if ok && got == chain {
			continue
		}
		if ok {
			del = append(del, podKeyElement(k))
		}
		add = append(add, podElement(k, chain))
	}
	for key := range have {
		if !wantRaw[key] {
			del = append(del, nftables.SetElement{Key: []byte(key)})
		}
	}
	if err := queueElems(c, m, del, c.SetDeleteElements); err != nil {
		return err
	}
	return queueElems(c, m, add, c.SetAddElements)
}

// queueStale deletes the chains and sets of cur that are not wanted:
// the objects of removed policies, and anything foreign in the table.
func (t *Table) queueStale(c *nftables.Conn, cur current, chains, sets map[string]bool) {
	for name := range cur.chains {
		if !chains[name] {
			c.DelChain(&nftables.Chain{Name: name, Table: t.table})
		}
	}
	for name := range cur.sets {
		if !sets[name] {
			c.DelSet(&nftables.Set{Name: name, Table: t.table})
		}
	}
}

// queueElems queues op (add or delete) for elems in chunks of
// elemsPerMessage.
func queueElems(c *nftables.Conn, s *nftables.Set, elems []nftables.SetElement,
	op func(*nftables.Set, []nftables.SetElement) error) error {
	for len(elems) > 0 {
		n := min(len(elems), elemsPerMessage)
		if err := op(s, elems[:n]); err != nil {
			return fmt.Errorf("nft: queue elements of %s: %w", s.Name, err)
		}
		elems = elems[n:]
	}
	return nil
}
