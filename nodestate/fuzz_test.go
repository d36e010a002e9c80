package nodestate

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// FuzzRecords: a pod record is a file on the node, outside input to the
// agent and to the plugin's DEL. Whatever it holds, Records returns the
// records or an error that names the file, never a panic.
func FuzzRecords(f *testing.F) {
	f.Add([]byte(`{"namespace":"purple","name":"client","containerID":"c1","ifName":"eth0","ip":"198.18.1.5","hostIf":"veth1","added":"2026-12-03T11:00:00Z"}`))
	f.Add([]byte(`{"ip":"not-an-ip"}`))
	f.Add([]byte(`{"ip":"2001:db8::1","hostIf":"` + strings.Repeat("x", 40) + `","port":"cni0"}`))
	f.Add([]byte(`{"added":"yesterday"}`))
	f.Add([]byte(`null`))
	f.Add([]byte{0xff, 0xfe})
	f.Fuzz(func(t *testing.T, b []byte) {
		st := State{Dir: t.TempDir()}
		dir := filepath.Join(st.Dir, podsDir)
		if err := os.MkdirAll(dir, 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, "198.18.1.5_veth1.json"), b, 0o600); err != nil {
			t.Fatal(err)
		}
		recs, err := st.Records()
		if err != nil {
			if !strings.Contains(err.Error(), "198.18.1.5_veth1.json") {
				t.Fatalf("error %v does not name the file", err)
			}
			return
		}
		if len(recs) != 1 {
			t.Fatalf("one file gave %d records", len(recs))
		}
	})
}

// FuzzSnapshot: the snapshot is read by the plugin when neither the agent
// nor the API server answers. Whatever it holds, ReadSnapshot returns it
// or an error, never a panic.
func FuzzSnapshot(f *testing.F) {
	f.Add([]byte(`{"namespaces":{"purple":{"team":"purple"}},"pods":{"purple/client":{}},"policies":[{"metadata":{"name":"p"},"status":{"tunnelID":1}}]}`))
	f.Add([]byte(`{"policies":[{"spec":{"destinations":[{"cidr":"nonsense"}]}}]}`))
	f.Add([]byte(`{"namespaces":[]}`))
	f.Add([]byte(``))
	f.Fuzz(func(t *testing.T, b []byte) {
		st := State{Dir: t.TempDir()}
		if err := os.WriteFile(filepath.Join(st.Dir, snapshotName), b, 0o600); err != nil {
			t.Fatal(err)
		}
		if _, ok, err := st.ReadSnapshot(); err == nil && !ok {
			t.Fatal("a snapshot file was read as no snapshot")
		}
	})
}
