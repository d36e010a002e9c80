package cniconf

import (
	"bytes"
	"encoding/json"
	"flag"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/containernetworking/cni/libcni"

	"github.com/nsegress/nsegress/nodestate"
)

var update = flag.Bool("update", false, "rewrite testdata/golden/*.golden from the current output")

// testEntry is the entry every golden file was made with: one node's
// settings, as the agent would pass them.
var testEntry = nodestate.Entry{
	Kubeconfig: "/etc/nsegress/node-1/kubeconfig",
	StateDir:   "/var/lib/nsegress/node-1",
	LogFile:    "/var/log/nsegress/node-1/plugin.log",
}

// fixtures lists the config files in testdata, each a primary CNI's
// config in the shape that project installs, or an odd layout that a
// byte-for-byte restore has to survive.
func fixtures(t testing.TB) []string {
	t.Helper()
	ents, err := os.ReadDir("testdata")
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range ents {
		if !e.IsDir() && isConfName(e.Name()) {
			names = append(names, e.Name())
		}
	}
	if len(names) < 10 {
		t.Fatalf("found only %d fixtures in testdata", len(names))
	}
	return names
}

func readFixture(t testing.TB, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// semantic decodes JSON for comparison by meaning: key order, spacing and
// escapes do not count, and numbers stay as written.
func semantic(t testing.TB, b []byte) any {
	t.Helper()
	d := json.NewDecoder(bytes.NewReader(b))
	d.UseNumber()
	var v any
	if err := d.Decode(&v); err != nil {
		t.Fatalf("decode %q: %v", b, err)
	}
	return v
}

// libcniUpconvert is what libcni's ConfListFromConf makes of a
// single-plugin config (without calling it: it is deprecated), as JSON.
func libcniUpconvert(t testing.TB, b []byte) []byte {
	t.Helper()
	pc, err := libcni.NetworkPluginConfFromBytes(b)
	if err != nil {
		t.Fatal(err)
	}
	var raw any
	d := json.NewDecoder(bytes.NewReader(b))
	d.UseNumber()
	if err := d.Decode(&raw); err != nil {
		t.Fatal(err)
	}
	out, err := json.Marshal(map[string]any{"name": pc.Network.Name, "cniVersion": pc.Network.CNIVersion, "plugins": []any{raw}})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func TestPatchOutputMatchesTheGoldenFiles(t *testing.T) {
	for _, name := range fixtures(t) {
		t.Run(name, func(t *testing.T) {
			outName, out, err := Patch(name, readFixture(t, name), testEntry)
			if err != nil {
				t.Fatal(err)
			}
			wantName := name
			if ext := filepath.Ext(name); ext != ".conflist" {
				wantName = strings.TrimSuffix(name, ext) + ".conflist"
			}
			if outName != wantName {
				t.Errorf("Patch wants the result written to %s, want %s", outName, wantName)
			}
			golden := filepath.Join("testdata", "golden", name+".golden")
			if *update {
				if err := os.WriteFile(golden, out, 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want, err := os.ReadFile(golden)
			if err != nil {
				t.Fatalf("%v (run go test -update to create it)", err)
			}
			if !bytes.Equal(out, want) {
				t.Errorf("patched %s differs from %s:\n--- got\n%s\n--- want\n%s", name, golden, out, want)
			}
		})
	}
}

func TestPatchedFixturesLoadWithNsegressLast(t *testing.T) {
	for _, name := range fixtures(t) {
		t.Run(name, func(t *testing.T) {
			in := readFixture(t, name)
			_, out, err := Patch(name, in, testEntry)
			if err != nil {
				t.Fatal(err)
			}
			list, err := libcni.ConfListFromBytes(out)
			if err != nil {
				t.Fatalf("patched file does not load: %v", err)
			}
			before := 1
			if filepath.Ext(name) == ".conflist" {
				orig, err := libcni.ConfListFromBytes(in)
				if err != nil {
					t.Fatal(err)
				}
				before = len(orig.Plugins)
			}
			if len(list.Plugins) != before+1 {
				t.Fatalf("patched list has %d plugins, want %d", len(list.Plugins), before+1)
			}
			last := list.Plugins[len(list.Plugins)-1]
			if last.Network.Type != nodestate.PluginType {
				t.Fatalf("last plugin is %q, want %q", last.Network.Type, nodestate.PluginType)
			}
			var got nodestate.Entry
			if err := json.Unmarshal(last.Bytes, &got); err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, testEntry) {
				t.Errorf("entry reads back as %+v, want %+v", got, testEntry)
			}
		})
	}
}

func TestPatchTwiceGivesTheSameBytes(t *testing.T) {
	for _, name := range fixtures(t) {
		t.Run(name, func(t *testing.T) {
			outName, once, err := Patch(name, readFixture(t, name), testEntry)
			if err != nil {
				t.Fatal(err)
			}
			_, twice, err := Patch(outName, once, testEntry)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(once, twice) {
				t.Errorf("second Patch changed the file:\n--- once\n%s\n--- twice\n%s", once, twice)
			}
		})
	}
}

func TestUnpatchUndoesPatchByteForByte(t *testing.T) {
	for _, name := range fixtures(t) {
		t.Run(name, func(t *testing.T) {
			in := readFixture(t, name)
			outName, out, err := Patch(name, in, testEntry)
			if err != nil {
				t.Fatal(err)
			}
			back, n, err := Unpatch(outName, out)
			if err != nil {
				t.Fatal(err)
			}
			if n != 1 {
				t.Errorf("Unpatch removed %d entries, want 1", n)
			}
			want := in
			if filepath.Ext(name) != ".conflist" {
				// The upconverted list; Uninstall restores the file itself.
				if want, err = upconvert(name, in); err != nil {
					t.Fatal(err)
				}
				if !reflect.DeepEqual(semantic(t, want), semantic(t, libcniUpconvert(t, in))) {
					t.Errorf("upconverted %s means something else than libcni's upconversion:\n%s", name, want)
				}
			}
			if !bytes.Equal(back, want) {
				t.Errorf("Unpatch(Patch(x)) != x:\n--- got\n%q\n--- want\n%q", back, want)
			}
		})
	}
}

func TestUnpatchLeavesAFileWithoutOurEntryAlone(t *testing.T) {
	in := readFixture(t, "10-calico.conflist")
	out, n, err := Unpatch("10-calico.conflist", in)
	if err != nil || n != 0 || !bytes.Equal(out, in) {
		t.Errorf("Unpatch = %d entries, err %v, same bytes %v; want 0, nil, true", n, err, bytes.Equal(out, in))
	}
}

func TestPatchReplacesEntriesWhereverTheyStand(t *testing.T) {
	tests := []struct {
		name, in, want string
	}{
		{
			name: "an old entry before the primary's last plugin moves to the end with the new settings",
			in:   `{"cniVersion":"1.0.0","name":"n","plugins":[{"type":"ptp"},{"type":"nsegress","kubeconfig":"/old"},{"type":"portmap"}]}`,
			want: `{"cniVersion":"1.0.0","name":"n","plugins":[{"type":"ptp"},{"type":"portmap"},` + mustMarshal(t, testEntry) + `]}`,
		},
		{
			name: "an entry in first place goes with the separator after it",
			in:   `{"cniVersion":"1.0.0","name":"n","plugins":[{"type":"nsegress"}, {"type":"ptp"}]}`,
			want: `{"cniVersion":"1.0.0","name":"n","plugins":[{"type":"ptp"},` + mustMarshal(t, testEntry) + `]}`,
		},
		{
			name: "two entries become one",
			in:   `{"cniVersion":"1.0.0","name":"n","plugins":[{"type":"ptp"},{"type":"nsegress"},{"type":"nsegress"}]}`,
			want: `{"cniVersion":"1.0.0","name":"n","plugins":[{"type":"ptp"},` + mustMarshal(t, testEntry) + `]}`,
		},
		{
			name: "an entry typed with a capital letter is ours too, as libcni reads it",
			in:   `{"cniVersion":"1.0.0","name":"n","plugins":[{"type":"ptp"},{"Type":"nsegress"}]}`,
			want: `{"cniVersion":"1.0.0","name":"n","plugins":[{"type":"ptp"},` + mustMarshal(t, testEntry) + `]}`,
		},
		{
			name: "only the last plugins key counts, as in encoding/json",
			in:   `{"cniVersion":"1.0.0","name":"n","plugins":[{"type":"a"}],"plugins":[{"type":"b"}]}`,
			want: `{"cniVersion":"1.0.0","name":"n","plugins":[{"type":"a"}],"plugins":[{"type":"b"},` + mustMarshal(t, testEntry) + `]}`,
		},
		{
			name: "an escaped key is still the plugins key",
			in:   `{"cniVersion":"1.0.0","name":"n","plugin\u0073":[{"type":"b"}]}`,
			want: `{"cniVersion":"1.0.0","name":"n","plugin\u0073":[{"type":"b"},` + mustMarshal(t, testEntry) + `]}`,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, out, err := Patch("10-n.conflist", []byte(tt.in), testEntry)
			if err != nil {
				t.Fatal(err)
			}
			if string(out) != tt.want {
				t.Errorf("got\n%s\nwant\n%s", out, tt.want)
			}
		})
	}
}

func mustMarshal(t testing.TB, v any) string {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func TestPatchNamesTheFileAndTheProblem(t *testing.T) {
	const list = "/etc/cni/net.d/10-x.conflist"
	const conf = "/etc/cni/net.d/10-x.conf"
	tests := []struct {
		name, file, data, want string
		entry                  *nodestate.Entry
	}{
		{"text that is not JSON", list, `{"plugins": [`, "conflist " + list + ": not valid JSON", nil},
		{"a top level that is a list", list, `[{"type":"ptp"}]`, "conflist " + list + ": top level is not an object", nil},
		{"a conflist without plugins", list, `{"name":"x","cniVersion":"1.0.0"}`, "conflist " + list + ": plugins is missing", nil},
		{"plugins that is not a list", list, `{"name":"x","cniVersion":"1.0.0","plugins":{"type":"ptp"}}`, "conflist " + list + ": plugins is not a list", nil},
		{"an empty plugins list", list, `{"name":"x","cniVersion":"1.0.0","plugins":[]}`, "conflist " + list + ": plugins is empty", nil},
		{"a plugin that is not an object", list, `{"name":"x","plugins":[{"type":"ptp"},"portmap"]}`, "conflist " + list + ": plugins[1] is not an object", nil},
		{"a plugin without a type", list, `{"name":"x","plugins":[{"ipam":{}}]}`, "conflist " + list + ": plugins[0] has no type", nil},
		{"a plugin whose type is not a string", list, `{"name":"x","plugins":[{"type":7}]}`, "conflist " + list + ": plugins[0]: json: cannot unmarshal number", nil},
		{"a conflist without a name", list, `{"cniVersion":"1.0.0","plugins":[{"type":"ptp"}]}`, "conflist " + list + ": error parsing configuration list: no name", nil},
		{"a list of nothing but nsegress", list, `{"name":"x","plugins":[{"type":"nsegress"}]}`, "conflist " + list + ": plugins holds nothing but nsegress", nil},
		{"a .conf without a type", conf, `{"name":"x","cniVersion":"1.0.0"}`, "conf " + conf + ": error parsing configuration: missing 'type'", nil},
		{"a .conf that holds a conflist", conf, readFixtureString(t, "10-ptp.conflist"), "conf " + conf + ": error parsing configuration: missing 'type'", nil},
		{"a .conf whose top level is a string", conf, `"ptp"`, "conf " + conf + ": top level is not an object", nil},
		{"a file name no runtime loads", "/etc/cni/net.d/10-x.yaml", `{}`, "/etc/cni/net.d/10-x.yaml: not a CNI config file name", nil},
		{"an entry with a relative kubeconfig", list, readFixtureString(t, "10-ptp.conflist"), `nsegress entry: kubeconfig "kubeconfig" is not an absolute path`,
			&nodestate.Entry{Kubeconfig: "kubeconfig", StateDir: "/s", LogFile: "/l"}},
		{"an entry without a log file", list, readFixtureString(t, "10-ptp.conflist"), "nsegress entry: logFile is empty",
			&nodestate.Entry{Kubeconfig: "/k", StateDir: "/s"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := testEntry
			if tt.entry != nil {
				e = *tt.entry
			}
			_, _, err := Patch(tt.file, []byte(tt.data), e)
			if err == nil || !strings.HasPrefix(err.Error(), tt.want) {
				t.Errorf("error %v, want one starting with %q", err, tt.want)
			}
		})
	}
}

func readFixtureString(t testing.TB, name string) string { return string(readFixture(t, name)) }

func TestChainedTellsWhetherTheEntryIsThere(t *testing.T) {
	primary := []byte(`{"cniVersion":"1.0.0","name":"lab","plugins":[{"type":"ptp"}]}`)
	if Chained(primary) {
		t.Errorf("a primary alone reads as chained")
	}
	_, patched, err := Patch("10-lab.conflist", primary, testEntry)
	if err != nil {
		t.Fatal(err)
	}
	if !Chained(patched) {
		t.Errorf("a patched conflist does not read as chained:\n%s", patched)
	}
	// The word alone, e.g. in a comment-like field, is not an entry.
	if Chained([]byte(`{"cniVersion":"1.0.0","name":"nsegress","plugins":[{"type":"ptp","note":"\"type\":\"nsegress\""}]}`)) {
		t.Errorf("a string mentioning nsegress reads as chained")
	}
}
