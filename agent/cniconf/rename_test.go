package cniconf

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestDetectForeignRename(t *testing.T) {
	tests := []struct {
		name           string
		names          []string
		ours, primary  string
		wantFile, want string // want: the .cilium_bak reported, "" for none
	}{
		{
			name:     "our file renamed to .cilium_bak is reported",
			names:    []string{"05-cilium.conflist", "10-calico.conflist.cilium_bak"},
			ours:     "10-calico.conflist",
			primary:  "10-calico.conflist",
			wantFile: "10-calico.conflist", want: "10-calico.conflist.cilium_bak",
		},
		{
			name:     "the primary's .conf renamed after it came back is reported",
			names:    []string{"10-mynet.conflist", "10-mynet.conf.cilium_bak"},
			ours:     "10-mynet.conflist",
			primary:  "10-mynet.conf",
			wantFile: "10-mynet.conf", want: "10-mynet.conf.cilium_bak",
		},
		{
			name:     "our file gone while another .cilium_bak is there is reported",
			names:    []string{"05-cilium.conflist", "20-other.conflist.cilium_bak"},
			ours:     "10-ptp.conflist",
			primary:  "10-ptp.conflist",
			wantFile: "10-ptp.conflist", want: "20-other.conflist.cilium_bak",
		},
		{
			name:    "a stale .cilium_bak next to our file is not reported",
			names:   []string{"10-calico.conflist", "10-calico.conflist.cilium_bak"},
			ours:    "10-calico.conflist",
			primary: "10-calico.conflist",
		},
		{
			name:    "our file gone with no .cilium_bak anywhere is not a rename",
			names:   []string{"05-other.conflist"},
			ours:    "10-calico.conflist",
			primary: "10-calico.conflist",
		},
		{
			name:    "an upconverted .conf that is gone as planned is not a rename",
			names:   []string{"10-mynet.conflist"},
			ours:    "10-mynet.conflist",
			primary: "10-mynet.conf",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := detectForeignRename("/etc/cni/net.d", tt.names, tt.ours, tt.primary)
			if tt.want == "" {
				if err != nil {
					t.Fatalf("got %v, want no error", err)
				}
				return
			}
			var fr *ForeignRenameError
			if !errors.As(err, &fr) {
				t.Fatalf("got %v, want a *ForeignRenameError", err)
			}
			if fr.File != tt.wantFile || fr.Renamed != tt.want {
				t.Errorf("reported %s -> %s, want %s -> %s", fr.File, fr.Renamed, tt.wantFile, tt.want)
			}
			for _, s := range []string{"cni.exclusive=false", "--cni-exclusive=false", "/etc/cni/net.d", tt.wantFile, tt.want} {
				if !strings.Contains(err.Error(), s) {
					t.Errorf("message %q does not mention %q", err, s)
				}
			}
		})
	}
}

func TestInstallReportsCiliumRenamingOurFile(t *testing.T) {
	in, conf, _ := newNode(t)
	copyFixture(t, conf, "10-calico.conflist", 0o644)
	if _, err := in.Install(testEntry); err != nil {
		t.Fatal(err)
	}
	if err := in.CheckForeignRename(); err != nil {
		t.Fatalf("before any rename: %v", err)
	}
	// Cilium in exclusive mode: its own file appears, ours is renamed.
	writeDir(t, conf, map[string]string{"05-cilium.conflist": readFixtureString(t, "05-cilium.conflist")})
	if err := os.Rename(filepath.Join(conf, "10-calico.conflist"), filepath.Join(conf, "10-calico.conflist.cilium_bak")); err != nil {
		t.Fatal(err)
	}
	if err := in.CheckForeignRename(); !IsForeignRename(err) {
		t.Errorf("CheckForeignRename = %v, want a foreign rename", err)
	}
	_, err := in.Install(testEntry)
	if !IsForeignRename(err) {
		t.Fatalf("Install = %v, want a foreign rename", err)
	}
	// Install did not move on to Cilium's file: Cilium would rename that
	// too, and the operator has to change its setting.
	if got := readFile(t, filepath.Join(conf, "05-cilium.conflist")); got != readFixtureString(t, "05-cilium.conflist") {
		t.Errorf("Install changed Cilium's file after the rename:\n%s", got)
	}
}
