package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"path/filepath"
)

// writeFileConfig is the parsed command line of "labbox write-file".
type writeFileConfig struct {
	path    string
	content string
}

// parseWriteFile parses the arguments of "labbox write-file". An empty
// -content falls back to $NODE_NAME (set from the downward API), so a
// DaemonSet pod marks the node it runs on; both empty is an error, since
// an empty file would prove nothing.
func parseWriteFile(fs *flag.FlagSet, args []string, getenv func(string) string) (writeFileConfig, error) {
	var cfg writeFileConfig
	fs.StringVar(&cfg.path, "path", "", "`file` to write (parent directories are created)")
	fs.StringVar(&cfg.content, "content", "", "`text` to write, exactly; default: $NODE_NAME")
	if err := parseFlags(fs, args); err != nil {
		return writeFileConfig{}, err
	}
	if fs.NArg() != 0 {
		return writeFileConfig{}, usagef("write-file takes no arguments, got %q", fs.Args())
	}
	if cfg.path == "" {
		return writeFileConfig{}, usagef("write-file: -path is required")
	}
	if cfg.content == "" {
		cfg.content = getenv("NODE_NAME")
	}
	if cfg.content == "" {
		return writeFileConfig{}, usagef("write-file: -content is empty and NODE_NAME is not set")
	}
	return cfg, nil
}

// runWriteFile implements "labbox write-file": it writes the file (for a
// test that checks a hostPath mount lands on the right node), then waits
// for SIGTERM like a long-running DaemonSet pod.
func runWriteFile(ctx context.Context, p proc, fs *flag.FlagSet, args []string) error {
	cfg, err := parseWriteFile(fs, args, p.getenv)
	if err != nil {
		return err
	}
	if err := writeFile(cfg); err != nil {
		return err
	}
	fmt.Fprintf(p.stdout, "wrote %d bytes to %s\n", len(cfg.content), cfg.path)
	<-ctx.Done()
	return nil
}

// writeFile writes cfg.content to cfg.path, creating parent directories.
func writeFile(cfg writeFileConfig) error {
	if err := os.MkdirAll(filepath.Dir(cfg.path), 0o755); err != nil {
		return fmt.Errorf("create parent of %s: %w", cfg.path, err)
	}
	if err := os.WriteFile(cfg.path, []byte(cfg.content), 0o644); err != nil {
		return fmt.Errorf("write %s: %w", cfg.path, err)
	}
	return nil
}
