package cniconf

import (
	"errors"
	"os"
	"path/filepath"
	"slices"
	"testing"
)

const (
	validList = `{"cniVersion":"1.0.0","name":"n","plugins":[{"type":"ptp"}]}`
	validConf = `{"cniVersion":"1.0.0","name":"n","type":"bridge"}`
)

// writeDir fills dir with files; a name ending in "/" makes a directory.
func writeDir(t testing.TB, dir string, files map[string]string) {
	t.Helper()
	for name, content := range files {
		p := filepath.Join(dir, name)
		if name[len(name)-1] == '/' {
			if err := os.MkdirAll(p, 0o755); err != nil {
				t.Fatal(err)
			}
			continue
		}
		// Map order is random: a file may come before its directory.
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

func TestSelectPrimaryChoosesAsTheRuntimeDoes(t *testing.T) {
	tests := []struct {
		name        string
		files       map[string]string
		want        string
		wantSkipped []string
	}{
		{
			name:  "the first file in lexical order wins",
			files: map[string]string{"20-b.conflist": validList, "10-a.conflist": validList, "30-c.conf": validConf},
			want:  "10-a.conflist",
		},
		{
			name:  "names sort bytewise, so 100 comes before 20",
			files: map[string]string{"20-b.conflist": validList, "100-a.conflist": validList},
			want:  "100-a.conflist",
		},
		{
			name:  "a .conf sorts before the .conflist of the same stem",
			files: map[string]string{"10-a.conflist": validList, "10-a.conf": validConf},
			want:  "10-a.conf",
		},
		{
			name:  "a .json file is read as a single plugin",
			files: map[string]string{"10-a.json": validConf, "20-b.conflist": validList},
			want:  "10-a.json",
		},
		{
			name: "backups, temporary files and other extensions are never chosen",
			files: map[string]string{
				"00-a.conflist.orig":                validList,
				"00-b.conflist.cilium_bak":          validList,
				".00-c.conflist.nsegress-tmp-12345": validList,
				"00-d.yaml":                         validList,
				"00-e.CONFLIST":                     validList,
				"00-f.conflist~":                    validList,
				"50-z.conflist":                     validList,
			},
			want: "50-z.conflist",
		},
		{
			name:  "a directory with a config name is ignored",
			files: map[string]string{"00-dir.conflist/": "", "10-a.conflist": validList},
			want:  "10-a.conflist",
		},
		{
			name: "files that do not load are skipped and reported in order",
			files: map[string]string{
				"00-truncated.conflist":  `{"cniVersion":"1.0.0","name":"n","plugins":[`,
				"01-no-plugins.conflist": `{"cniVersion":"1.0.0","name":"n"}`,
				"02-list-in-a.conf":      validList,
				"03-no-type.json":        `{"name":"n"}`,
				"04-empty.conflist":      ``,
				"10-good.conflist":       validList,
			},
			want:        "10-good.conflist",
			wantSkipped: []string{"00-truncated.conflist", "01-no-plugins.conflist", "02-list-in-a.conf", "03-no-type.json", "04-empty.conflist"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			writeDir(t, dir, tt.files)
			sel, err := SelectPrimary(dir)
			if err != nil {
				t.Fatal(err)
			}
			if sel.Name != tt.want {
				t.Errorf("chose %s, want %s", sel.Name, tt.want)
			}
			var skipped []string
			for _, s := range sel.Skipped {
				if s.Err == nil {
					t.Errorf("%s skipped without a reason", s.Name)
				}
				skipped = append(skipped, s.Name)
			}
			if !slices.Equal(skipped, tt.wantSkipped) {
				t.Errorf("skipped %v, want %v", skipped, tt.wantSkipped)
			}
		})
	}
}

func TestSelectPrimaryInADirWithoutConfigsIsNoPrimaryError(t *testing.T) {
	dir := t.TempDir()
	writeDir(t, dir, map[string]string{"00-broken.conflist": "{", "README": "x"})
	_, err := SelectPrimary(dir)
	var np *NoPrimaryError
	if !errors.As(err, &np) {
		t.Fatalf("error %v, want a *NoPrimaryError", err)
	}
	if len(np.Skipped) != 1 || np.Skipped[0].Name != "00-broken.conflist" {
		t.Errorf("skipped %v, want 00-broken.conflist", np.Skipped)
	}
}

func TestSelectPrimaryOfAMissingDirSaysWhichDir(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "net.d")
	_, err := SelectPrimary(dir)
	if err == nil || !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("error %v, want one wrapping ErrNotExist", err)
	}
}
