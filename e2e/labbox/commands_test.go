package main

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"strings"
	"testing"
	"time"
)

func TestSelectCommand(t *testing.T) {
	tests := []struct {
		name     string
		argv     []string
		wantCmd  string
		wantArgs []string
		wantErr  bool
	}{
		{
			name:     "the first argument names the command",
			argv:     []string{"/labbox", "get", "-timeout", "1s", "http://198.18.1.5:8080/"},
			wantCmd:  "get",
			wantArgs: []string{"-timeout", "1s", "http://198.18.1.5:8080/"},
		},
		{
			name:     "a command without arguments gets none",
			argv:     []string{"labbox", "pause"},
			wantCmd:  "pause",
			wantArgs: []string{},
		},
		{
			name:     "invoked under a command's name the binary runs that command with every argument",
			argv:     []string{"/usr/local/bin/echo", "-listen", ":80"},
			wantCmd:  "echo",
			wantArgs: []string{"-listen", ":80"},
		},
		{
			name:    "no command is a usage error",
			argv:    []string{"/labbox"},
			wantErr: true,
		},
		{
			name:    "an empty argv is a usage error",
			argv:    nil,
			wantErr: true,
		},
		{
			name:    "an unknown command is a usage error",
			argv:    []string{"/labbox", "curl", "http://x/"},
			wantErr: true,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, args, err := selectCommand(tt.argv)
			if tt.wantErr {
				var uerr *usageError
				if !errors.As(err, &uerr) {
					t.Fatalf("selectCommand(%q) error = %v, want a usage error", tt.argv, err)
				}
				return
			}
			if err != nil {
				t.Fatalf("selectCommand(%q): %v", tt.argv, err)
			}
			if c.name != tt.wantCmd {
				t.Errorf("command = %q, want %q", c.name, tt.wantCmd)
			}
			if strings.Join(args, " ") != strings.Join(tt.wantArgs, " ") || len(args) != len(tt.wantArgs) {
				t.Errorf("args = %q, want %q", args, tt.wantArgs)
			}
		})
	}
}

func TestRunExitCodes(t *testing.T) {
	// The context is already cancelled, as after SIGTERM, so commands that
	// wait return at once.
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	tests := []struct {
		name       string
		argv       []string
		wantCode   int
		wantStderr string
	}{
		{
			name:     "sleep exits 0 on SIGTERM",
			argv:     []string{"labbox", "sleep"},
			wantCode: exitOK,
		},
		{
			name:       "sleep with an argument is a usage error",
			argv:       []string{"labbox", "sleep", "10"},
			wantCode:   exitUsage,
			wantStderr: "takes no arguments",
		},
		{
			name:       "an unknown flag is a usage error that shows the command's usage",
			argv:       []string{"labbox", "get", "-retries", "3", "http://x/"},
			wantCode:   exitUsage,
			wantStderr: "usage: labbox get [-timeout 3s] [-upload N]",
		},
		{
			name:       "help is not an error",
			argv:       []string{"labbox", "echo", "-h"},
			wantCode:   exitOK,
			wantStderr: "usage: labbox echo [-listen :8080]",
		},
		{
			name:       "an unknown command lists the commands",
			argv:       []string{"labbox", "ping"},
			wantCode:   exitUsage,
			wantStderr: "labbox write-file -path P [-content S]",
		},
		{
			name:       "a failed request exits 1 and names the command",
			argv:       []string{"labbox", "get", "http://127.0.0.1:1/"},
			wantCode:   exitFailure,
			wantStderr: "labbox get: ",
		},
		{
			name:       "write-file fails when it cannot write",
			argv:       []string{"labbox", "write-file", "-path", "/dev/null/x", "-content", "node-1"},
			wantCode:   exitFailure,
			wantStderr: "write-file: create parent of /dev/null/x",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			p := proc{stdout: &stdout, stderr: &stderr, getenv: func(string) string { return "" }}
			code := run(ctx, p, tt.argv)
			if code != tt.wantCode {
				t.Errorf("run(%q) = %d, want %d; stderr:\n%s", tt.argv, code, tt.wantCode, stderr.String())
			}
			if !strings.Contains(stderr.String(), tt.wantStderr) {
				t.Errorf("stderr = %q, want it to contain %q", stderr.String(), tt.wantStderr)
			}
		})
	}
}

func TestParseEcho(t *testing.T) {
	tests := []struct {
		name       string
		args       []string
		wantListen string
		wantErr    bool
	}{
		{name: "the default listens on port 8080 on every address", args: nil, wantListen: ":8080"},
		{name: "-listen picks the address", args: []string{"-listen", "203.0.113.10:80"}, wantListen: "203.0.113.10:80"},
		{name: "an address without a port is refused", args: []string{"-listen", "8080"}, wantErr: true},
		{name: "a positional argument is refused", args: []string{":8080"}, wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg, err := parseEcho(testFlagSet(t, "echo"), tt.args)
			if (err != nil) != tt.wantErr {
				t.Fatalf("parseEcho(%q) error = %v, want error: %v", tt.args, err, tt.wantErr)
			}
			if cfg.listen != tt.wantListen {
				t.Errorf("listen = %q, want %q", cfg.listen, tt.wantListen)
			}
		})
	}
}

func TestParseGet(t *testing.T) {
	tests := []struct {
		name    string
		args    []string
		want    getConfig
		wantErr bool
	}{
		{
			name: "a URL alone times out after 3s",
			args: []string{"http://203.0.113.10/"},
			want: getConfig{url: "http://203.0.113.10/", timeout: 3 * time.Second, repeat: 1, interval: 100 * time.Millisecond},
		},
		{
			name: "-timeout before the URL sets the timeout",
			args: []string{"-timeout", "500ms", "http://198.18.1.5:8080/x"},
			want: getConfig{url: "http://198.18.1.5:8080/x", timeout: 500 * time.Millisecond, repeat: 1, interval: 100 * time.Millisecond},
		},
		{name: "no URL is refused", args: nil, wantErr: true},
		{name: "a flag after the URL is refused", args: []string{"http://a/", "-timeout", "1s"}, wantErr: true},
		{name: "a URL without a scheme is refused", args: []string{"203.0.113.10:80"}, wantErr: true},
		{name: "a URL without a host is refused", args: []string{"http:///path"}, wantErr: true},
		{name: "a zero timeout is refused", args: []string{"-timeout", "0s", "http://a/"}, wantErr: true},
		{name: "a timeout without a unit is refused", args: []string{"-timeout", "3", "http://a/"}, wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg, err := parseGet(testFlagSet(t, "get"), tt.args)
			if (err != nil) != tt.wantErr {
				t.Fatalf("parseGet(%q) error = %v, want error: %v", tt.args, err, tt.wantErr)
			}
			if cfg != tt.want {
				t.Errorf("parseGet(%q) = %+v, want %+v", tt.args, cfg, tt.want)
			}
		})
	}
}

func TestParseWriteFile(t *testing.T) {
	tests := []struct {
		name     string
		args     []string
		nodeName string
		want     writeFileConfig
		wantErr  bool
	}{
		{
			name: "-content is written as given",
			args: []string{"-path", "/host/mark", "-content", "hello"},
			want: writeFileConfig{path: "/host/mark", content: "hello"},
		},
		{
			name:     "without -content the node name is written",
			args:     []string{"-path", "/host/mark"},
			nodeName: "worker-2",
			want:     writeFileConfig{path: "/host/mark", content: "worker-2"},
		},
		{
			name:     "-content wins over the node name",
			args:     []string{"-path", "/host/mark", "-content", "x"},
			nodeName: "worker-2",
			want:     writeFileConfig{path: "/host/mark", content: "x"},
		},
		{name: "without -path it is refused", args: []string{"-content", "x"}, wantErr: true},
		{name: "with nothing to write it is refused", args: []string{"-path", "/host/mark"}, wantErr: true},
		{name: "a positional argument is refused", args: []string{"-path", "/a", "-content", "x", "extra"}, wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			getenv := func(key string) string {
				if key == "NODE_NAME" {
					return tt.nodeName
				}
				return ""
			}
			cfg, err := parseWriteFile(testFlagSet(t, "write-file"), tt.args, getenv)
			if (err != nil) != tt.wantErr {
				t.Fatalf("parseWriteFile(%q) error = %v, want error: %v", tt.args, err, tt.wantErr)
			}
			if cfg != tt.want {
				t.Errorf("parseWriteFile(%q) = %+v, want %+v", tt.args, cfg, tt.want)
			}
		})
	}
}

// testFlagSet returns the flag set run would hand the named command,
// printing into the test log.
func testFlagSet(t *testing.T, name string) *flag.FlagSet {
	t.Helper()
	c, ok := lookupCommand(name)
	if !ok {
		t.Fatalf("no command %q", name)
	}
	return newFlagSet(c, tWriter{t})
}

// tWriter sends flag package output to the test log.
type tWriter struct{ t *testing.T }

func (w tWriter) Write(b []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(b), "\n"))
	return len(b), nil
}
