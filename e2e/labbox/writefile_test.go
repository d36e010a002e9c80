package main

import (
	"os"
	"path/filepath"
	"testing"
)

func TestWriteFile(t *testing.T) {
	tests := []struct {
		name    string
		relPath string
		content string
	}{
		{name: "a file in an existing directory is written", relPath: "mark", content: "worker-1"},
		{name: "missing parent directories are created", relPath: "a/b/mark", content: "gateway-1"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), tt.relPath)
			if err := writeFile(writeFileConfig{path: path, content: tt.content}); err != nil {
				t.Fatalf("writeFile: %v", err)
			}
			got, err := os.ReadFile(path)
			if err != nil {
				t.Fatalf("read back: %v", err)
			}
			if string(got) != tt.content {
				t.Errorf("file holds %q, want %q", got, tt.content)
			}
		})
	}
}
