// Command labbox is the one static binary inside every lab test image and
// the lab's pause image (docs/design.md §6: images without a registry). It is a
// multi-call binary: the first argument, or the name it is invoked under,
// picks the command.
//
//	labbox pause                          PID 1 of a pod sandbox
//	labbox echo [-listen :8080]           answer every request with the caller's IP
//	            [-count-markers]          and count received marked packets
//	labbox get [-timeout 3s] URL          HTTP GET, body to stdout
//	labbox stream [-duration 10s] URL     GETs over one kept-alive connection;
//	                                      prints whether it survived and the
//	                                      longest gap
//	labbox write-file -path P [-content S]  write a file, then wait
//	labbox sleep                          wait until SIGTERM
//	labbox forge -gateway IP -vni N ...   send forged nsegress VXLAN datagrams
//	labbox send-marker -dst IP:PORT ...   send a marker over an ordinary socket
//
// Every command that waits stops on SIGTERM or SIGINT and exits 0. Usage
// errors exit 2, other failures exit 1.
//
// labbox uses only the standard library so that the images stay a single
// small file and build in seconds.
package main

import (
	"context"
	"io"
	"os"
	"os/signal"
	"syscall"
)

// proc is what a command may use of the process it runs in; tests pass
// their own writers and environment.
type proc struct {
	stdout io.Writer
	stderr io.Writer
	getenv func(string) string
}

func main() {
	// The signals a kubelet (SIGTERM) or a person (SIGINT) uses to stop a
	// container end the context; each command returns cleanly on it.
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	p := proc{stdout: os.Stdout, stderr: os.Stderr, getenv: os.Getenv}
	code := run(ctx, p, os.Args)
	stop() // os.Exit skips deferred calls
	os.Exit(code)
}
