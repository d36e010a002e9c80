package cniconf

import (
	"bytes"
	"encoding/json"
	"errors"
	"io/fs"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/nsegress/nsegress/nodestate"
)

// newNode gives an installer over a fresh conf dir and state dir, side by
// side as on a node (/etc/cni/net.d and /var/lib/nsegress).
func newNode(t testing.TB) (in *Installer, confDir, stateDir string) {
	t.Helper()
	root := t.TempDir()
	confDir = filepath.Join(root, "etc", "cni", "net.d")
	stateDir = filepath.Join(root, "var", "lib", "nsegress", "cniconf")
	if err := os.MkdirAll(confDir, 0o755); err != nil {
		t.Fatal(err)
	}
	in, err := NewInstaller(confDir, stateDir)
	if err != nil {
		t.Fatal(err)
	}
	return in, confDir, stateDir
}

func copyFixture(t testing.TB, dir, name string, mode fs.FileMode) {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, readFixture(t, name), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(p, mode); err != nil {
		t.Fatal(err)
	}
}

func readFile(t testing.TB, p string) string {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

type fileState struct {
	data string
	mode fs.FileMode
}

// snapshot is every file of dir with its bytes and mode.
func snapshot(t testing.TB, dir string) map[string]fileState {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		t.Fatal(err)
	}
	s := map[string]fileState{}
	for _, e := range ents {
		fi, err := e.Info()
		if err != nil {
			t.Fatal(err)
		}
		s[e.Name()] = fileState{data: readFile(t, filepath.Join(dir, e.Name())), mode: fi.Mode()}
	}
	return s
}

func assertSameDir(t testing.TB, what string, got, want map[string]fileState) {
	t.Helper()
	if !maps.Equal(got, want) {
		gk, wk := slices.Sorted(maps.Keys(got)), slices.Sorted(maps.Keys(want))
		t.Errorf("%s: conf dir differs\n got files %v\nwant files %v", what, gk, wk)
		for _, k := range wk {
			if g, ok := got[k]; ok && g != want[k] {
				t.Errorf("%s: %s: got mode %v\n%q\nwant mode %v\n%q", what, k, g.mode, g.data, want[k].mode, want[k].data)
			}
		}
	}
}

func TestInstallThenUninstallRestoresEveryFixtureByteForByte(t *testing.T) {
	for _, name := range fixtures(t) {
		t.Run(name, func(t *testing.T) {
			in, conf, state := newNode(t)
			copyFixture(t, conf, name, 0o640)
			before := snapshot(t, conf)

			res, err := in.Install(testEntry)
			if err != nil {
				t.Fatal(err)
			}
			written := filepath.Join(conf, res.Written)
			if !res.Changed || res.Primary != name {
				t.Errorf("Install = %+v, want a change of %s", res, name)
			}
			if got, want := readFile(t, written), readFile(t, filepath.Join("testdata", "golden", name+".golden")); got != want {
				t.Errorf("installed file differs from the golden file:\n%s", got)
			}
			if fi, err := os.Stat(written); err != nil || fi.Mode().Perm() != 0o640 {
				t.Errorf("installed file mode = %v (%v), want the original's 0640", fi.Mode(), err)
			}
			if sel, err := SelectPrimary(conf); err != nil || sel.Name != res.Written {
				t.Errorf("the runtime would load %s (%v), want %s", sel.Name, err, res.Written)
			}
			if got := readFile(t, filepath.Join(state, name+".orig")); got != before[name].data {
				t.Errorf("backup differs from the original")
			}
			installed := snapshot(t, conf)

			again, err := in.Install(testEntry)
			if err != nil {
				t.Fatal(err)
			}
			if again.Changed {
				t.Errorf("second Install reports a change")
			}
			assertSameDir(t, "after a second Install", snapshot(t, conf), installed)

			if _, err := in.Uninstall(); err != nil {
				t.Fatal(err)
			}
			assertSameDir(t, "after Uninstall", snapshot(t, conf), before)
			if s := snapshot(t, state); len(s) != 0 {
				t.Errorf("state dir keeps %v after Uninstall", slices.Sorted(maps.Keys(s)))
			}
		})
	}
}

func TestUninstallWhenNotInstalledChangesNothing(t *testing.T) {
	in, conf, _ := newNode(t)
	for _, name := range []string{"10-calico.conflist", "10-mynet.conf", "odd-crlf.conflist"} {
		copyFixture(t, conf, name, 0o644)
	}
	before := snapshot(t, conf)
	res, err := in.Uninstall()
	if err != nil {
		t.Fatal(err)
	}
	if res.Changed {
		t.Errorf("Uninstall reports a change: %+v", res)
	}
	assertSameDir(t, "after Uninstall", snapshot(t, conf), before)
}

// rewriteAsPrimary stands for the primary CNI's installer writing its
// file again in its own way (re-encoded, keys sorted), with edit applied.
func rewriteAsPrimary(t testing.TB, path string, edit func(list map[string]any)) string {
	t.Helper()
	var list map[string]any
	if err := json.Unmarshal([]byte(readFile(t, path)), &list); err != nil {
		t.Fatal(err)
	}
	edit(list)
	b, err := json.MarshalIndent(list, "", "    ")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func addBandwidth(list map[string]any) {
	list["plugins"] = append(list["plugins"].([]any), map[string]any{"type": "tuning"})
}

func dropNsegress(list map[string]any) {
	var keep []any
	for _, p := range list["plugins"].([]any) {
		if p.(map[string]any)["type"] != nodestate.PluginType {
			keep = append(keep, p)
		}
	}
	list["plugins"] = keep
}

func TestUninstallAfterThePrimaryRewroteItsFile(t *testing.T) {
	tests := []struct {
		name string
		edit func(map[string]any)
		// keptOurs: the rewrite still holds our entry, so Uninstall must
		// remove it and only it.
		keptOurs bool
	}{
		{"a rewrite that dropped our entry is left as the primary wrote it", func(l map[string]any) { dropNsegress(l) }, false},
		{"a rewrite that dropped our entry and added a plugin is left alone", func(l map[string]any) { dropNsegress(l); addBandwidth(l) }, false},
		{"a rewrite that kept our entry loses only our entry", func(map[string]any) {}, true},
		{"a rewrite that kept our entry and added a plugin after it loses only our entry", addBandwidth, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			in, conf, state := newNode(t)
			copyFixture(t, conf, "10-calico.conflist", 0o644)
			if _, err := in.Install(testEntry); err != nil {
				t.Fatal(err)
			}
			path := filepath.Join(conf, "10-calico.conflist")
			rewritten := rewriteAsPrimary(t, path, tt.edit)

			res, err := in.Uninstall()
			if err != nil {
				t.Fatal(err)
			}
			got := readFile(t, path)
			if !tt.keptOurs {
				if got != rewritten || res.Changed {
					t.Errorf("Uninstall changed the primary's rewrite (changed=%v):\n%s", res.Changed, got)
				}
			} else {
				want, n, err := Unpatch(path, []byte(rewritten))
				if err != nil || n != 1 {
					t.Fatalf("Unpatch of the rewrite: %d, %v", n, err)
				}
				if got != string(want) || !res.Changed {
					t.Errorf("Uninstall left (changed=%v)\n%s\nwant\n%s", res.Changed, got, want)
				}
				if strings.Contains(got, nodestate.PluginType) {
					t.Errorf("nsegress is still in the file")
				}
			}
			if s := snapshot(t, state); len(s) != 0 {
				t.Errorf("state dir keeps %v", slices.Sorted(maps.Keys(s)))
			}
		})
	}
}

func TestInstallAfterThePrimaryRewroteItsFileAddsTheEntryAgain(t *testing.T) {
	in, conf, _ := newNode(t)
	copyFixture(t, conf, "10-calico.conflist", 0o644)
	if _, err := in.Install(testEntry); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(conf, "10-calico.conflist")
	rewritten := rewriteAsPrimary(t, path, func(l map[string]any) { dropNsegress(l); addBandwidth(l) })

	res, err := in.Install(testEntry)
	if err != nil {
		t.Fatal(err)
	}
	_, want, err := Patch(path, []byte(rewritten), testEntry)
	if err != nil {
		t.Fatal(err)
	}
	if got := readFile(t, path); got != string(want) || !res.Changed {
		t.Errorf("Install after the rewrite left (changed=%v)\n%s", res.Changed, got)
	}
	if _, err := in.Uninstall(); err != nil {
		t.Fatal(err)
	}
	if got := readFile(t, path); got != rewritten {
		t.Errorf("Uninstall did not give back the primary's rewrite:\n%s", got)
	}
}

func TestInstallAppliesAChangedEntry(t *testing.T) {
	in, conf, _ := newNode(t)
	copyFixture(t, conf, "10-kindnet.conflist", 0o644)
	before := snapshot(t, conf)
	if _, err := in.Install(testEntry); err != nil {
		t.Fatal(err)
	}
	changed := testEntry
	changed.LogFile = "/var/log/nsegress/node-1/other.log"
	res, err := in.Install(changed)
	if err != nil {
		t.Fatal(err)
	}
	_, want, err := Patch("10-kindnet.conflist", readFixture(t, "10-kindnet.conflist"), changed)
	if err != nil {
		t.Fatal(err)
	}
	if got := readFile(t, filepath.Join(conf, "10-kindnet.conflist")); got != string(want) || !res.Changed {
		t.Errorf("Install with a changed entry left (changed=%v)\n%s", res.Changed, got)
	}
	if _, err := in.Uninstall(); err != nil {
		t.Fatal(err)
	}
	assertSameDir(t, "after Uninstall", snapshot(t, conf), before)
}

func TestInstallFollowsThePrimaryToANewFile(t *testing.T) {
	in, conf, _ := newNode(t)
	copyFixture(t, conf, "10-flannel.conflist", 0o644)
	flannel := readFixtureString(t, "10-flannel.conflist")
	if _, err := in.Install(testEntry); err != nil {
		t.Fatal(err)
	}
	// A new primary's file sorts first: the runtime now loads it.
	copyFixture(t, conf, "05-cilium.conflist", 0o600)
	before := snapshot(t, conf)
	before["10-flannel.conflist"] = fileState{data: flannel, mode: 0o644}

	res, err := in.Install(testEntry)
	if err != nil {
		t.Fatal(err)
	}
	if res.Written != "05-cilium.conflist" {
		t.Errorf("installed into %s, want 05-cilium.conflist", res.Written)
	}
	if got := readFile(t, filepath.Join(conf, "10-flannel.conflist")); got != flannel {
		t.Errorf("the old primary's file was not restored:\n%s", got)
	}
	if got := readFile(t, filepath.Join(conf, "05-cilium.conflist")); !strings.Contains(got, `"type": "nsegress"`) {
		t.Errorf("the new primary's file has no nsegress entry:\n%s", got)
	}
	if _, err := in.Uninstall(); err != nil {
		t.Fatal(err)
	}
	assertSameDir(t, "after Uninstall", snapshot(t, conf), before)
}

func TestUpconvertedConfThatThePrimaryWritesAgainIsTakenOverAgain(t *testing.T) {
	in, conf, _ := newNode(t)
	copyFixture(t, conf, "10-mynet.conf", 0o644)
	if _, err := in.Install(testEntry); err != nil {
		t.Fatal(err)
	}
	// The primary's installer writes its .conf again, with another
	// subnet; it sorts before our .conflist, so the runtime loads it.
	newConf := strings.Replace(readFixtureString(t, "10-mynet.conf"), "198.18.3.0/24", "198.18.9.0/24", 1)
	writeDir(t, conf, map[string]string{"10-mynet.conf": newConf})

	res, err := in.Install(testEntry)
	if err != nil {
		t.Fatal(err)
	}
	if !res.Changed || res.Primary != "10-mynet.conf" || res.Written != "10-mynet.conflist" {
		t.Errorf("Install = %+v", res)
	}
	if _, err := os.Stat(filepath.Join(conf, "10-mynet.conf")); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("the .conf is still there: %v", err)
	}
	if got := readFile(t, filepath.Join(conf, "10-mynet.conflist")); !strings.Contains(got, "198.18.9.0/24") {
		t.Errorf("the conflist was not made from the new .conf:\n%s", got)
	}
	if _, err := in.Uninstall(); err != nil {
		t.Fatal(err)
	}
	want := map[string]fileState{"10-mynet.conf": {data: newConf, mode: 0o644}}
	assertSameDir(t, "after Uninstall", snapshot(t, conf), want)
}

func TestUninstallKeepsAConfThePrimaryWroteAgain(t *testing.T) {
	in, conf, _ := newNode(t)
	copyFixture(t, conf, "10-mynet.conf", 0o644)
	if _, err := in.Install(testEntry); err != nil {
		t.Fatal(err)
	}
	newConf := `{"cniVersion":"1.0.0","name":"mynet","type":"bridge","bridge":"cni9"}`
	writeDir(t, conf, map[string]string{"10-mynet.conf": newConf})
	if _, err := in.Uninstall(); err != nil {
		t.Fatal(err)
	}
	want := map[string]fileState{"10-mynet.conf": {data: newConf, mode: 0o644}}
	assertSameDir(t, "after Uninstall", snapshot(t, conf), want)
}

func TestUpconvertRefusesWhatWouldChangeTheRuntimesChoice(t *testing.T) {
	tests := []struct {
		name  string
		files map[string]string
		want  string
	}{
		{
			name:  "a conflist of the same stem that is not ours",
			files: map[string]string{"10-mynet.conflist": validList},
			want:  "10-mynet.conflist exists and is not ours",
		},
		{
			name:  "a file that sorts between the .conf and the .conflist",
			files: map[string]string{"10-mynet.conf.json": validConf},
			want:  "10-mynet.conf.json sorts between them",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			in, conf, _ := newNode(t)
			copyFixture(t, conf, "10-mynet.conf", 0o644)
			writeDir(t, conf, tt.files)
			before := snapshot(t, conf)
			_, err := in.Install(testEntry)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("Install = %v, want an error with %q", err, tt.want)
			}
			assertSameDir(t, "after the refused Install", snapshot(t, conf), before)
		})
	}
}

func TestInstallWithoutAPrimaryIsNoPrimaryError(t *testing.T) {
	in, conf, _ := newNode(t)
	writeDir(t, conf, map[string]string{"00-half-written.conflist": `{"name":`})
	_, err := in.Install(testEntry)
	var np *NoPrimaryError
	if !errors.As(err, &np) {
		t.Fatalf("Install = %v, want a *NoPrimaryError", err)
	}
}

func TestInstallRefusesASymlinkedPrimary(t *testing.T) {
	in, conf, _ := newNode(t)
	target := filepath.Join(t.TempDir(), "real.conflist")
	if err := os.WriteFile(target, []byte(validList), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(target, filepath.Join(conf, "10-link.conflist")); err != nil {
		t.Fatal(err)
	}
	_, err := in.Install(testEntry)
	if err == nil || !strings.Contains(err.Error(), "10-link.conflist is not a regular file") {
		t.Fatalf("Install = %v, want a refusal naming the link", err)
	}
}

func TestInstallRefusesPluginsFromTheNetworksDir(t *testing.T) {
	in, conf, _ := newNode(t)
	writeDir(t, conf, map[string]string{
		"10-n.conflist": validList,
		"n/":            "",
		"n/50-x.conf":   `{"type":"tuning"}`,
	})
	_, err := in.Install(testEntry)
	if err == nil || !strings.Contains(err.Error(), "1 plugins come from") {
		t.Fatalf("Install = %v, want a refusal of plugins from the network's dir", err)
	}
}

func TestNewInstallerRefusesAStateDirInTheConfDir(t *testing.T) {
	root := t.TempDir()
	conf := filepath.Join(root, "net.d")
	tests := []struct {
		name, state string
		ok          bool
	}{
		{"the conf dir itself", conf, false},
		{"the conf dir written differently", conf + "/./", false},
		{"a dir inside the conf dir", filepath.Join(conf, "nsegress"), false},
		{"a sibling dir", filepath.Join(root, "nsegress"), true},
		{"a sibling whose name starts with dots", filepath.Join(conf, "..nsegress"), false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := NewInstaller(conf, tt.state)
			if (err == nil) != tt.ok {
				t.Errorf("NewInstaller(%s, %s) = %v, want ok=%v", conf, tt.state, err, tt.ok)
			}
		})
	}
}

func TestALostStateDirIsRebuiltFromTheFile(t *testing.T) {
	in, conf, state := newNode(t)
	copyFixture(t, conf, "odd-crlf.conflist", 0o644)
	before := snapshot(t, conf)
	if _, err := in.Install(testEntry); err != nil {
		t.Fatal(err)
	}
	installed := snapshot(t, conf)
	if err := os.RemoveAll(state); err != nil {
		t.Fatal(err)
	}
	res, err := in.Install(testEntry)
	if err != nil {
		t.Fatal(err)
	}
	if res.Changed {
		t.Errorf("Install after losing the state dir rewrote the file")
	}
	assertSameDir(t, "after Install", snapshot(t, conf), installed)
	if got := readFile(t, filepath.Join(state, "odd-crlf.conflist.orig")); got != before["odd-crlf.conflist"].data {
		t.Errorf("rebuilt backup differs from the original:\n%q", got)
	}
	if _, err := in.Uninstall(); err != nil {
		t.Fatal(err)
	}
	assertSameDir(t, "after Uninstall", snapshot(t, conf), before)
}

func TestUninstallWithoutStateStillRemovesOurEntryExactly(t *testing.T) {
	in, conf, state := newNode(t)
	copyFixture(t, conf, "10-calico.conflist", 0o644)
	copyFixture(t, conf, "10-bridge.conflist", 0o644)
	before := snapshot(t, conf)
	if _, err := in.Install(testEntry); err != nil {
		t.Fatal(err)
	}
	// An entry in a file the runtime does not load (an older install).
	_, patched, err := Patch("10-calico.conflist", readFixture(t, "10-calico.conflist"), testEntry)
	if err != nil {
		t.Fatal(err)
	}
	writeDir(t, conf, map[string]string{"10-calico.conflist": string(patched)})
	if err := os.RemoveAll(state); err != nil {
		t.Fatal(err)
	}
	res, err := in.Uninstall()
	if err != nil {
		t.Fatal(err)
	}
	if !res.Changed {
		t.Errorf("Uninstall reports no change")
	}
	assertSameDir(t, "after Uninstall", snapshot(t, conf), before)
}

var errCrash = errors.New("simulated crash before rename")

func TestACrashBeforeTheRenameLeavesTheOldFile(t *testing.T) {
	for _, name := range []string{"10-ptp.conflist", "10-mynet.conf"} {
		t.Run(name, func(t *testing.T) {
			in, conf, _ := newNode(t)
			copyFixture(t, conf, name, 0o644)
			before := snapshot(t, conf)
			crashed := false
			in.beforeRename = func(tmp string) error {
				if filepath.Dir(tmp) != conf {
					return nil // state files go through; the conf file "crashes"
				}
				crashed = true
				// At the moment of the crash the old file is whole and is
				// still what the runtime loads; the temporary file is not
				// a candidate.
				assertSameDir(t, "at the crash", withoutTemp(t, snapshot(t, conf)), before)
				if sel, err := SelectPrimary(conf); err != nil || sel.Name != name {
					t.Errorf("at the crash the runtime would load %s (%v), want %s", sel.Name, err, name)
				}
				return errCrash
			}
			if _, err := in.Install(testEntry); !errors.Is(err, errCrash) {
				t.Fatalf("Install = %v, want the crash", err)
			}
			if !crashed {
				t.Fatal("the seam never ran")
			}
			assertSameDir(t, "after the crash", snapshot(t, conf), before)

			// The record already names bytes that never landed: Uninstall
			// must see the file is not ours and leave it as it is.
			in.beforeRename = nil
			if _, err := in.Uninstall(); err != nil {
				t.Fatal(err)
			}
			assertSameDir(t, "after Uninstall", snapshot(t, conf), before)

			// And an Install after a crash at its very first write (the
			// backup) converges.
			in.beforeRename = func(string) error { return errCrash }
			if _, err := in.Install(testEntry); !errors.Is(err, errCrash) {
				t.Fatalf("Install = %v, want the crash", err)
			}
			in.beforeRename = nil
			if _, err := in.Install(testEntry); err != nil {
				t.Fatal(err)
			}
			if _, err := in.Uninstall(); err != nil {
				t.Fatal(err)
			}
			assertSameDir(t, "after install and uninstall", snapshot(t, conf), before)
		})
	}
}

// withoutTemp drops our temporary files from a snapshot.
func withoutTemp(t testing.TB, s map[string]fileState) map[string]fileState {
	t.Helper()
	out := map[string]fileState{}
	for k, v := range s {
		if !nodestate.IsTempName(filepath.Base(k)) {
			out[k] = v
		}
	}
	if len(out) == len(s) {
		t.Errorf("no temporary file at the crash: %v", slices.Sorted(maps.Keys(s)))
	}
	return out
}

func TestTheStateFilesAreReadableByAnOperator(t *testing.T) {
	in, conf, state := newNode(t)
	copyFixture(t, conf, "10-mynet.conf", 0o644)
	if _, err := in.Install(testEntry); err != nil {
		t.Fatal(err)
	}
	var rec map[string]string
	if err := json.Unmarshal([]byte(readFile(t, filepath.Join(state, recordName))), &rec); err != nil {
		t.Fatal(err)
	}
	want := map[string]string{
		"confDir":       conf,
		"primary":       "10-mynet.conf",
		"written":       "10-mynet.conflist",
		"mode":          "0644",
		"writtenSHA256": digest([]byte(readFile(t, filepath.Join(conf, "10-mynet.conflist")))),
	}
	if !maps.Equal(rec, want) {
		t.Errorf("record = %v, want %v", rec, want)
	}
	if !bytes.Equal([]byte(readFile(t, filepath.Join(state, "10-mynet.conf.orig"))), readFixture(t, "10-mynet.conf")) {
		t.Errorf("backup is not the original .conf")
	}
	for name, f := range snapshot(t, state) {
		if f.mode.Perm() != stateFileMode {
			t.Errorf("%s has mode %v, want %v", name, f.mode.Perm(), fs.FileMode(stateFileMode))
		}
	}
}

func TestUninstallDecidesByTheHashOfWhatWeWrote(t *testing.T) {
	// The backup is marked so that the test sees which way Uninstall
	// went: back to the backup, or only our entry taken out.
	marked := strings.Replace(readFixtureString(t, "10-ptp.conflist"), `"lab"`, `"lab-from-backup"`, 1)
	tests := []struct {
		name    string
		rewrite bool
		want    func(installed string) string
	}{
		{"a file still exactly as we wrote it gets the backup back", false,
			func(string) string { return marked }},
		{"a file rewritten since keeps the rewrite, without our entry", true,
			func(string) string { return readFixtureString(t, "10-ptp.conflist") + " " }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			in, conf, state := newNode(t)
			copyFixture(t, conf, "10-ptp.conflist", 0o644)
			if _, err := in.Install(testEntry); err != nil {
				t.Fatal(err)
			}
			path := filepath.Join(conf, "10-ptp.conflist")
			installed := readFile(t, path)
			writeDir(t, state, map[string]string{"10-ptp.conflist.orig": marked})
			if tt.rewrite {
				writeDir(t, conf, map[string]string{"10-ptp.conflist": installed + " "})
			}
			if _, err := in.Uninstall(); err != nil {
				t.Fatal(err)
			}
			if got, want := readFile(t, path), tt.want(installed); got != want {
				t.Errorf("after Uninstall\n%q\nwant\n%q", got, want)
			}
		})
	}
}

func TestUninstallReportsAListOfNothingButNsegress(t *testing.T) {
	in, conf, _ := newNode(t)
	only := `{"cniVersion":"1.0.0","name":"odd","plugins":[{"type":"nsegress"}]}`
	writeDir(t, conf, map[string]string{"10-ptp.conflist": readFixtureString(t, "10-ptp.conflist"), "20-odd.conflist": only})
	_, err := in.Uninstall()
	if err == nil || !strings.Contains(err.Error(), "20-odd.conflist: plugins holds nothing but nsegress") {
		t.Fatalf("Uninstall = %v, want an error naming 20-odd.conflist", err)
	}
	if got := readFile(t, filepath.Join(conf, "20-odd.conflist")); got != only {
		t.Errorf("Uninstall changed 20-odd.conflist:\n%s", got)
	}
}

func TestAPrimaryThatMovesFromConfToConflistOfTheSameNameIsFollowed(t *testing.T) {
	in, conf, state := newNode(t)
	copyFixture(t, conf, "10-mynet.conf", 0o644)
	if _, err := in.Install(testEntry); err != nil {
		t.Fatal(err)
	}
	// The primary's new version writes a conflist itself, over ours.
	own := readFixtureString(t, "10-bridge.conflist")
	writeDir(t, conf, map[string]string{"10-mynet.conflist": own})
	res, err := in.Install(testEntry)
	if err != nil {
		t.Fatal(err)
	}
	if res.Primary != "10-mynet.conflist" || res.Written != "10-mynet.conflist" || !res.Changed {
		t.Errorf("Install = %+v", res)
	}
	if names := slices.Sorted(maps.Keys(snapshot(t, state))); !slices.Equal(names, []string{"10-mynet.conflist.orig", recordName}) {
		t.Errorf("state dir holds %v", names)
	}
	if _, err := in.Uninstall(); err != nil {
		t.Fatal(err)
	}
	assertSameDir(t, "after Uninstall", snapshot(t, conf), map[string]fileState{"10-mynet.conflist": {data: own, mode: 0o644}})
}

func TestCleanTempRemovesOnlyOurTemporaryFiles(t *testing.T) {
	in, conf, _ := newNode(t)
	for _, name := range []string{".10-ptp.conflist123456", ".10-mynet.conf42", "10-ptp.conflist", ".hidden", ".10-ptp.conflist.bak"} {
		if err := os.WriteFile(filepath.Join(conf, name), []byte("x"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if err := in.CleanTemp(); err != nil {
		t.Fatal(err)
	}
	got := slices.Sorted(maps.Keys(snapshot(t, conf)))
	want := []string{".10-ptp.conflist.bak", ".hidden", "10-ptp.conflist"}
	if !slices.Equal(got, want) {
		t.Errorf("after CleanTemp the dir holds %v, want %v", got, want)
	}
}
