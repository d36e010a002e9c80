package main

import (
	"errors"
	"strings"
	"testing"

	"github.com/nsegress/nsegress/agent/datapath"
	"github.com/nsegress/nsegress/nft"
)

func TestParseDefaultsAndErrors(t *testing.T) {
	verb, o, err := parse([]string{"install", "-cni-conf-dir", "/n/etc", "-state-dir", "/n/state"})
	if err != nil || verb != "install" {
		t.Fatalf("parse: %q %v", verb, err)
	}
	if o.confDir != "/n/etc" || o.binDir != "/opt/cni/bin" || o.kubeconfig != "/n/state/kubeconfig" {
		t.Errorf("options = %+v", o)
	}
	for _, tc := range []struct {
		args []string
		want string
	}{
		{nil, "usage"},
		{[]string{"instal"}, `unknown command "instal"`},
		{[]string{"install", "-no-such-flag"}, "no-such-flag"},
	} {
		if _, _, err := parse(tc.args); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("parse(%q) = %v, want an error mentioning %q", tc.args, err, tc.want)
		}
	}
}

func TestPodRangesFromFlagOrEnvironment(t *testing.T) {
	if _, o, err := parse([]string{"run"}); err != nil || o.ignorePodRanges {
		t.Fatalf("default: ignore = %v, %v; want node", o.ignorePodRanges, err)
	}
	t.Setenv("NSEGRESS_POD_RANGES", "ignore")
	if _, o, err := parse([]string{"run"}); err != nil || !o.ignorePodRanges {
		t.Errorf("NSEGRESS_POD_RANGES=ignore: ignore = %v, %v", o.ignorePodRanges, err)
	}
	if _, o, err := parse([]string{"run", "-pod-ranges", "node"}); err != nil || o.ignorePodRanges {
		t.Errorf("the flag wins over the environment: ignore = %v, %v", o.ignorePodRanges, err)
	}
	if _, _, err := parse([]string{"run", "-pod-ranges", "all"}); err == nil || !strings.Contains(err.Error(), `-pod-ranges "all"`) {
		t.Errorf("a bad value: %v, want an error naming it", err)
	}
}

func TestVXLANPortFromFlagOrEnvironment(t *testing.T) {
	_, o, err := parse([]string{"run"})
	if err != nil || o.vxlanPort != 8479 {
		t.Fatalf("default port = %d, %v; want 8479", o.vxlanPort, err)
	}
	t.Setenv("NSEGRESS_VXLAN_PORT", "9000")
	if _, o, err = parse([]string{"run"}); err != nil || o.vxlanPort != 9000 {
		t.Errorf("port from NSEGRESS_VXLAN_PORT = %d, %v; want 9000", o.vxlanPort, err)
	}
	if _, o, err = parse([]string{"run", "-vxlan-port", "9100"}); err != nil || o.vxlanPort != 9100 {
		t.Errorf("the flag wins over the environment: %d, %v", o.vxlanPort, err)
	}
	for _, bad := range []string{"0", "70000", "x"} {
		t.Setenv("NSEGRESS_VXLAN_PORT", bad)
		if _, _, err := parse([]string{"run"}); err == nil || !strings.Contains(err.Error(), "NSEGRESS_VXLAN_PORT") {
			t.Errorf("NSEGRESS_VXLAN_PORT=%s: %v, want an error naming it", bad, err)
		}
	}
	t.Setenv("NSEGRESS_VXLAN_PORT", "")
	if _, _, err := parse([]string{"run", "-vxlan-port", "70000"}); err == nil {
		t.Errorf("-vxlan-port 70000 accepted")
	}
}

// TestADeadRoleFailsLiveness: a role that returned while the agent runs
// turns /healthz to 503 and says which role died.
func TestADeadRoleFailsLiveness(t *testing.T) {
	var died roleDeaths
	if err := died.err(); err != nil {
		t.Fatalf("no role died, yet %v", err)
	}
	died.add("agent socket", errors.New("listen unix: address in use"))
	err := died.err()
	if err == nil || !strings.Contains(err.Error(), "agent socket") || !strings.Contains(err.Error(), "address in use") {
		t.Errorf("err = %v, want the dead role and its error", err)
	}
}

func TestCoexistenceSettingsFromFlagsOrEnvironment(t *testing.T) {
	_, o, err := parse([]string{"run"})
	if err != nil || o.settings != (datapath.Settings{Marks: nft.DefaultMarkBits, TableBase: 20000, RulePriority: 1900}) {
		t.Fatalf("defaults = %+v, %v", o.settings, err)
	}
	t.Setenv("NSEGRESS_MARK_BITS", "0x00000fff")
	t.Setenv("NSEGRESS_TABLE_BASE", "30000")
	if _, o, err = parse([]string{"run", "-rule-priority", "1500"}); err != nil ||
		o.settings != (datapath.Settings{Marks: 0xfff, TableBase: 30000, RulePriority: 1500}) {
		t.Errorf("from the environment and a flag: %+v, %v", o.settings, err)
	}
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"run", "-mark-bits", "0x00ff0000"}, "not 12 contiguous bits"},
		{[]string{"run", "-table-base", "10"}, "table base 10"},
		{[]string{"run", "-rule-priority", "lots"}, "rule-priority"},
	} {
		if _, _, err := parse(tc.args); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("parse(%q) = %v, want an error mentioning %q", tc.args, err, tc.want)
		}
	}
	t.Setenv("NSEGRESS_TABLE_BASE", "twenty")
	if _, _, err := parse([]string{"run"}); err == nil || !strings.Contains(err.Error(), `NSEGRESS_TABLE_BASE="twenty"`) {
		t.Errorf("a bad environment value: %v", err)
	}
}

func TestTheControllerVerbHasItsOwnHealthPort(t *testing.T) {
	t.Setenv("NSEGRESS_HEALTH_ADDR", "")
	t.Setenv("POD_NAME", "nsegress-controller-5d8f-abcde")
	verb, o, err := parse([]string{"controller"})
	if err != nil || verb != "controller" {
		t.Fatalf("parse controller: %q, %v", verb, err)
	}
	if o.healthAddr != "127.0.0.1:9810" || o.podName != "nsegress-controller-5d8f-abcde" {
		t.Errorf("controller: health %s, identity %q; want 127.0.0.1:9810 (the agent, on the same host network, has 9809) and the pod's name", o.healthAddr, o.podName)
	}
	if _, o, _ := parse([]string{"run"}); o.healthAddr != "127.0.0.1:9809" {
		t.Errorf("run: health %s; want 127.0.0.1:9809", o.healthAddr)
	}
}
