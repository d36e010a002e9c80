package datapath

import (
	"bytes"
	"net"
	"net/netip"
	"testing"

	"github.com/nsegress/nsegress/nft"
)

func TestNamesAndNumbersOfAPolicysTunnel(t *testing.T) {
	tn := Tunnel{ID: 42}
	if tn.Device() != "nsg42" {
		t.Errorf("device name %q, want nsg42", tn.Device())
	}
	if longest := DeviceName(nft.MaxPolicyID); len(longest) > 15 {
		t.Errorf("%q does not fit IFNAMSIZ", longest)
	}
	for _, s := range []Settings{{}, {TableBase: 1000}} {
		s = s.withDefaults()
		if got := s.table(tn.ID); got != s.TableBase+42 {
			t.Errorf("table %d, want %d", got, s.TableBase+42)
		}
		// Every table of a valid ID is one that removeStale owns, and
		// the tables next to the range are not.
		for id, want := range map[int]bool{0: false, 1: true, nft.MaxPolicyID: true, nft.MaxPolicyID + 1: false} {
			if got := s.ownsTable(s.TableBase + id); got != want {
				t.Errorf("ownsTable(%d) = %v, want %v", s.TableBase+id, got, want)
			}
		}
	}
}

func TestDeviceMTUAndMSSLeaveRoomForVXLANAndHeaders(t *testing.T) {
	for _, tc := range []struct{ uplink, device, mss int }{
		{1500, 1450, 1410}, // docs/design.md §7: the measured VXLAN MTU on a 1500 uplink
		{9000, 8950, 8910},
		{1450, 1400, 1360}, // an uplink that is itself a tunnel
	} {
		if got := DeviceMTU(tc.uplink); got != tc.device {
			t.Errorf("DeviceMTU(%d) = %d, want %d", tc.uplink, got, tc.device)
		}
		if got := MSS(tc.device); int(got) != tc.mss {
			t.Errorf("MSS(%d) = %d, want %d", tc.device, got, tc.mss)
		}
	}
}

func TestDeviceMACIsLocallyAdministeredAndCarriesTheNodeIP(t *testing.T) {
	mac := DeviceMAC(netip.MustParseAddr("198.51.100.21"))
	if mac.String() != "02:6e:c6:33:64:15" {
		t.Errorf("DeviceMAC = %s, want 02:6e:c6:33:64:15", mac)
	}
	if mac[0]&0x02 == 0 || mac[0]&0x01 != 0 {
		t.Errorf("%s is not a locally administered unicast address", mac)
	}
	if DeviceMAC(netip.MustParseAddr("10.0.0.1")).String() == DeviceMAC(netip.MustParseAddr("10.0.0.2")).String() {
		t.Error("two nodes share a device address")
	}
}

func TestGratuitousARPIsARequestForTheAddressItself(t *testing.T) {
	mac := net.HardwareAddr{0x02, 0x00, 0x00, 0x00, 0x00, 0x21}
	got := garp(mac, netip.MustParseAddr("198.51.100.101"))
	want := []byte{
		0x00, 0x01, // hardware type Ethernet
		0x08, 0x00, // protocol IPv4
		6, 4, // address lengths
		0x00, 0x01, // request
		0x02, 0x00, 0x00, 0x00, 0x00, 0x21, // sender MAC
		198, 51, 100, 101, // sender IP
		0, 0, 0, 0, 0, 0, // target MAC: unknown
		198, 51, 100, 101, // target IP = sender IP
	}
	if !bytes.Equal(got, want) {
		t.Errorf("garp =\n%x\nwant\n%x", got, want)
	}
}
