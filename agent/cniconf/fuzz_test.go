package cniconf

import (
	"bytes"
	"reflect"
	"testing"

	"github.com/containernetworking/cni/libcni"

	"github.com/nsegress/nsegress/nodestate"
)

// FuzzPatch feeds Patch and Unpatch any bytes, as a conf dir may hold
// anything. Neither may panic, and whenever Patch succeeds its output must
// load as a conflist with exactly one nsegress entry, in last place, whose
// removal gives back the input's list: the same bytes when the input held
// no entry, the same meaning otherwise.
func FuzzPatch(f *testing.F) {
	for _, name := range fixtures(f) {
		data := readFixture(f, name)
		f.Add(data, name != "10-mynet.conf" && name != "odd-crlf-bridge.json")
	}
	f.Add([]byte(`{"name":"n","plugins":[{"type":"nsegress"},{"type":"ptp"},{"Type":"nsegress"}]}`), true)
	f.Add([]byte(`{"name":"n","plugins":[{"type":"a"}],"plugins":[{"type":"b"}],"plugin\u0073":[{"type":"c"}]}`), true)
	f.Add([]byte("{\"name\":\"n\",\"plugins\":[\r\n\t{\"type\":\"a\"}\r]}"), true)
	f.Add([]byte(`{"name":"x\"]}","type":"bridge","a":[{"b":"}"}]}`), false)
	f.Add([]byte(`{"type":"nsegress"}`), false)
	f.Add([]byte(`[]`), true)

	f.Fuzz(func(t *testing.T, data []byte, isList bool) {
		name := "10-f.conf"
		if isList {
			name = "10-f.conflist"
		}
		if isList {
			// Unpatch alone, on anything: no panic, and what it keeps
			// still loads.
			if out, n, err := Unpatch(name, data); err == nil && n > 0 {
				if _, err := libcni.ConfListFromBytes(out); err != nil {
					t.Fatalf("Unpatch output does not load: %v\n%q", err, out)
				}
			}
		}
		outName, out, err := Patch(name, data, testEntry)
		if err != nil {
			return
		}
		list, err := libcni.ConfListFromBytes(out)
		if err != nil {
			t.Fatalf("Patch output does not load: %v\n%q", err, out)
		}
		ours := 0
		for _, p := range list.Plugins {
			if p.Network.Type == nodestate.PluginType {
				ours++
			}
		}
		if ours != 1 {
			t.Fatalf("Patch output holds %d nsegress entries:\n%q", ours, out)
		}
		if last := list.Plugins[len(list.Plugins)-1]; last.Network.Type != nodestate.PluginType {
			t.Fatalf("last plugin is %q:\n%q", last.Network.Type, out)
		}
		back, n, err := Unpatch(outName, out)
		if err != nil || n != 1 {
			t.Fatalf("Unpatch of Patch output: %d entries, %v", n, err)
		}
		if isList {
			want, had, err := Unpatch(name, data)
			if err != nil {
				t.Fatalf("Patch accepted what Unpatch refuses: %v", err)
			}
			if had == 0 && !bytes.Equal(back, data) {
				t.Fatalf("Unpatch(Patch(x)) != x:\n%q\n%q", back, data)
			}
			if !reflect.DeepEqual(semantic(t, back), semantic(t, want)) {
				t.Fatalf("Unpatch(Patch(x)) means something else than x without nsegress:\n%q\n%q", back, want)
			}
		} else if !reflect.DeepEqual(semantic(t, back), semantic(t, libcniUpconvert(t, data))) {
			t.Fatalf("Unpatch(Patch(x)) means something else than libcni's upconversion of x:\n%q", back)
		}
		_, again, err := Patch(outName, out, testEntry)
		if err != nil || !bytes.Equal(again, out) {
			t.Fatalf("Patch is not idempotent (%v):\n%q\n%q", err, out, again)
		}
	})
}
