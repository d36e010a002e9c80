package nft

import (
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/google/nftables"
	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"
)

// raceAttempts bounds the retries of an operation that lost a race with
// another writer of the pods map (the CNI plugin runs in other processes).
const raceAttempts = 3

// AddPod sends k's packets to policy id's chain, in one transaction that
// does not list the map. If k is already in the map with another policy
// it is replaced atomically; with the same policy AddPod does nothing.
// If the policy's chain (or the table) does not exist, the error wraps
// ErrPolicyNotProgrammed.
func (t *Table) AddPod(k PodKey, id uint16) error {
	if err := validatePolicyID(id); err != nil {
		return err
	}
	if err := validatePodKey(k, ""); err != nil {
		return err
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	var err error
	for range raceAttempts {
		var replace bool
		if replace, err = t.addPodOnce(k, id); err != nil || !replace {
			return err
		}
		// k is in the map with another policy: delete and re-add it in
		// one transaction, so that there is no moment without it. If it
		// vanished in between (a concurrent DelPod), try again.
		if err = t.replacePod(k, id); err == nil || !errors.Is(err, unix.ENOENT) {
			break
		}
	}
	if err != nil {
		return fmt.Errorf("nft: add pod %s to policy %d: %w", k, id, err)
	}
	return nil
}

// addPodOnce adds k's element; replace reports that k is already in the
// map with a different verdict.
func (t *Table) addPodOnce(k PodKey, id uint16) (replace bool, err error) {
	elem := podElement(k, policyChain(id))
	err = t.commit(func(c *nftables.Conn) error {
		return c.SetAddElements(t.podsSet(), []nftables.SetElement{elem})
	})
	switch {
	case err == nil:
		return false, nil
	case errors.Is(err, unix.ENOENT):
		// The jump target (or the whole table) does not exist.
		return false, fmt.Errorf("nft: add pod %s: policy %d: %w (no chain %s in table ip %s: %w)",
			k, id, ErrPolicyNotProgrammed, policyChain(id), t.table.Name, err)
	case isElementClash(err):
		return true, nil
	}
	return false, fmt.Errorf("nft: add pod %s to policy %d: %w", k, id, err)
}

// replacePod deletes k's element and adds it with policy id, atomically.
func (t *Table) replacePod(k PodKey, id uint16) error {
	return t.commit(func(c *nftables.Conn) error {
		m := t.podsSet()
		if err := c.SetDeleteElements(m, []nftables.SetElement{podKeyElement(k)}); err != nil {
			return err
		}
		return c.SetAddElements(m, []nftables.SetElement{podElement(k, policyChain(id))})
	})
}

// isElementClash reports the kernel's answer to adding an element whose
// key exists with different data: EEXIST on current kernels, EBUSY on
// older ones.
func isElementClash(err error) bool {
	return errors.Is(err, unix.EEXIST) || errors.Is(err, unix.EBUSY)
}

// DelPod removes k's element. An absent element, map or table is
// success: DEL is idempotent, and a late DEL for a pod whose IP was
// reused by a pod on another interface removes nothing of the new pod.
func (t *Table) DelPod(k PodKey) error {
	if !k.IP.Is4() || len(k.HostIf) >= ifNameSize {
		return nil // such a key was never added
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	err := t.commit(func(c *nftables.Conn) error {
		return c.SetDeleteElements(t.podsSet(), []nftables.SetElement{podKeyElement(k)})
	})
	if err != nil && !errors.Is(err, unix.ENOENT) {
		return fmt.Errorf("nft: delete pod %s: %w", k, err)
	}
	return nil
}

// Pods returns the content of the pods map; an absent table gives an
// empty map.
func (t *Table) Pods() (map[PodKey]uint16, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	ok, err := t.exists()
	if err != nil || !ok {
		return map[PodKey]uint16{}, err
	}
	raw, err := t.readPods()
	if err != nil {
		return nil, err
	}
	pods := make(map[PodKey]uint16, len(raw))
	for key, chain := range raw {
		k, kok := parsePodKey([]byte(key))
		id, cok := parsePolicyChain(chain)
		if !kok || !cok {
			return nil, fmt.Errorf("nft: map %s in table ip %s has a foreign element (key %x, verdict %q)",
				mapPods, t.table.Name, key, chain)
		}
		pods[k] = id
	}
	return pods, nil
}

// readPods lists the pods map as raw key -> name of the chain the element
// jumps to ("" if its verdict is not a jump).
func (t *Table) readPods() (map[string]string, error) {
	elems, err := t.conn.GetSetElements(t.podsSet())
	if err != nil {
		return nil, fmt.Errorf("nft: list map %s in table ip %s: %w", mapPods, t.table.Name, err)
	}
	pods := make(map[string]string, len(elems))
	for _, e := range elems {
		pods[string(e.Key)] = jumpTarget(e.Val)
	}
	return pods, nil
}

// jumpTarget decodes the chain of a jump verdict as the kernel dumps it
// (NFTA_VERDICT_CODE, NFTA_VERDICT_CHAIN); "" for any other verdict.
func jumpTarget(b []byte) string {
	ad, err := netlink.NewAttributeDecoder(b)
	if err != nil {
		return ""
	}
	ad.ByteOrder = binary.BigEndian
	var chain string
	var code int32
	for ad.Next() {
		switch ad.Type() {
		case unix.NFTA_VERDICT_CODE:
			code = int32(ad.Uint32())
		case unix.NFTA_VERDICT_CHAIN:
			chain = ad.String()
		}
	}
	if ad.Err() != nil || code != unix.NFT_JUMP {
		return ""
	}
	return chain
}
