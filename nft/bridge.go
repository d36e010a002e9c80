package nft

import (
	"errors"
	"fmt"
	"net/netip"
	"slices"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"golang.org/x/sys/unix"
)

// On a bridge primary every pod's packets reach the IP layer on the
// bridge, so a pod's element, keyed by address and host interface, is
// keyed by the bridge: a pod that forged a neighbour's address would get
// the neighbour's policy. A bridge-family table of the same name guards
// the addresses of selected pods on bridges: a frame whose IPv4 source is
// one of them must enter the bridge on that pod's own port (its host-side
// veth), or it is dropped before the IP layer sees it.
const (
	setGuarded         = "guarded"
	setGuard           = "guard"
	chainBridgeIngress = "prerouting"
	// ethPIPv4 is the Ethernet type of IPv4.
	ethPIPv4 = 0x0800
)

// prioBridgeFilter is the bridge family's filter priority: before the
// bridge forwards the frame or passes it up to the IP layer.
var prioBridgeFilter = nftables.ChainPriorityRef(-200)

// bridgeTable is the bridge-family table beside the ip table.
func (t *Table) bridgeTable() *nftables.Table {
	return &nftables.Table{Name: t.table.Name, Family: nftables.TableFamilyBridge}
}

func (t *Table) guardedSet() *nftables.Set {
	return &nftables.Set{Table: t.bridgeTable(), Name: setGuarded, KeyType: nftables.TypeIPAddr}
}

func (t *Table) guardSet() *nftables.Set {
	return &nftables.Set{Table: t.bridgeTable(), Name: setGuard,
		KeyType: nftables.MustConcatSetType(nftables.TypeIPAddr, nftables.TypeIFName), Concatenation: true}
}

// guardRule is "meta protocol ip ip saddr @guarded ip saddr . iifname !=
// @guard drop".
func guardRule() []expr.Any {
	return []expr.Any{
		&expr.Meta{Key: expr.MetaKeyPROTOCOL, Register: reg1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: reg1, Data: be16(ethPIPv4)},
		&expr.Payload{DestRegister: reg1, Base: expr.PayloadBaseNetworkHeader, Offset: 12, Len: 4},
		&expr.Lookup{SourceRegister: reg1, SetName: setGuarded},
		&expr.Payload{DestRegister: reg1, Base: expr.PayloadBaseNetworkHeader, Offset: 12, Len: 4},
		&expr.Meta{Key: expr.MetaKeyIIFNAME, Register: reg32x01},
		&expr.Lookup{SourceRegister: reg1, SetName: setGuard, Invert: true},
		&expr.Verdict{Kind: expr.VerdictDrop},
	}
}

func guardElems(guards map[netip.Addr]string) (guarded, guard []nftables.SetElement) {
	ips := make([]netip.Addr, 0, len(guards))
	for ip := range guards {
		ips = append(ips, ip)
	}
	slices.SortFunc(ips, netip.Addr.Compare)
	for _, ip := range ips {
		guarded = append(guarded, nftables.SetElement{Key: ip.AsSlice()})
		guard = append(guard, nftables.SetElement{Key: podKeyBytes(PodKey{IP: ip, HostIf: guards[ip]})})
	}
	return guarded, guard
}

// queueBridge queues, in Apply's transaction, the bridge table with the
// guards of s: the table is replaced whole (it holds one element per
// selected pod on a bridge, and no state of its own).
func (t *Table) queueBridge(c *nftables.Conn, guards map[netip.Addr]string) error {
	bt := t.bridgeTable()
	c.AddTable(bt)
	c.DelTable(bt)
	c.AddTable(bt)
	guarded, guard := guardElems(guards)
	if err := c.AddSet(t.guardedSet(), guarded); err != nil {
		return fmt.Errorf("nft: add set %s: %w", setGuarded, err)
	}
	if err := c.AddSet(t.guardSet(), guard); err != nil {
		return fmt.Errorf("nft: add set %s: %w", setGuard, err)
	}
	accept := nftables.ChainPolicyAccept
	ch := c.AddChain(&nftables.Chain{Name: chainBridgeIngress, Table: bt, Type: nftables.ChainTypeFilter,
		Hooknum: nftables.ChainHookPrerouting, Priority: prioBridgeFilter, Policy: &accept})
	c.AddRule(&nftables.Rule{Table: bt, Chain: ch, Exprs: guardRule()})
	return nil
}

// GuardPort makes port the only bridge port that frames from ip may
// enter by. Call it before AddPod of a pod on a bridge, so that the pod's
// element never exists unguarded. If the bridge table does not exist
// (Apply has not run) the error wraps ErrPolicyNotProgrammed.
func (t *Table) GuardPort(ip netip.Addr, port string) error {
	if err := validatePodKey(PodKey{IP: ip, HostIf: port}, ""); err != nil {
		return err
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	guarded, guard := guardElems(map[netip.Addr]string{ip: port})
	err := t.commit(func(c *nftables.Conn) error {
		if err := c.SetAddElements(t.guardedSet(), guarded); err != nil {
			return err
		}
		return c.SetAddElements(t.guardSet(), guard)
	})
	if errors.Is(err, unix.ENOENT) {
		return fmt.Errorf("nft: guard %s on port %s: %w (no table bridge %s)", ip, port, ErrPolicyNotProgrammed, t.table.Name)
	}
	if err != nil {
		return fmt.Errorf("nft: guard %s on port %s: %w", ip, port, err)
	}
	return nil
}

// UnguardPort removes ip's guard on port; call it after DelPod. With port
// empty it only disarms the guard of ip, whatever its port (a guard an
// earlier pod left when its DEL was lost must not keep a new pod with the
// address from sending); Apply removes the rest. An absent guard or table
// is success.
func (t *Table) UnguardPort(ip netip.Addr, port string) error {
	if !ip.Is4() || len(port) >= ifNameSize {
		return nil // such a guard was never added
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	guarded, guard := guardElems(map[netip.Addr]string{ip: port})
	dels := []struct {
		set   *nftables.Set
		elems []nftables.SetElement
	}{{t.guardSet(), guard}, {t.guardedSet(), guarded}}
	if port == "" {
		dels = dels[1:]
	}
	for _, del := range dels {
		err := t.commit(func(c *nftables.Conn) error { return c.SetDeleteElements(del.set, del.elems) })
		if err != nil && !errors.Is(err, unix.ENOENT) {
			return fmt.Errorf("nft: unguard %s on port %s: %w", ip, port, err)
		}
	}
	return nil
}
