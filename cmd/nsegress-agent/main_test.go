package main

import (
	"strings"
	"testing"
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
