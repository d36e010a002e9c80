package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"path/filepath"
)

// Exit codes of labbox.
const (
	exitOK      = 0
	exitFailure = 1
	exitUsage   = 2
)

// command is one verb of the multi-call binary. run receives a flag set
// already named and wired for usage output; it declares its flags on it
// and parses args with parseFlags.
type command struct {
	name     string
	synopsis string
	run      func(ctx context.Context, p proc, fs *flag.FlagSet, args []string) error
}

// commands lists every verb; usage prints them in this order.
var commands = []command{
	{name: "pause", synopsis: "pause", run: runPause},
	{name: "echo", synopsis: "echo [-listen :8080] [-count-markers]", run: runEcho},
	{name: "get", synopsis: "get [-timeout 3s] [-upload N] [-count] [-repeat N -interval D] URL", run: runGet},
	{name: "stream", synopsis: "stream [-interval 100ms] [-duration 10s] [-timeout 1s] [-fresh] URL", run: runStream},
	{name: "pull", synopsis: "pull [-interval 50ms] [-duration 10s] URL", run: runPull},
	{name: "bench", synopsis: "bench [-bytes N] [-requests N] [-timeout D] URL", run: runBench},
	{name: "write-file", synopsis: "write-file -path P [-content S]", run: runWriteFile},
	{name: "sleep", synopsis: "sleep", run: runSleep},
	{name: "forge", synopsis: "forge -gateway IP [-port 8479] -vni N[,N] [-proto udp,tcp] -inner-src IP -dst IP:PORT -marker M [-count N]", run: runForge},
	{name: "send-marker", synopsis: "send-marker [-proto tcp|udp] [-src IP [-spoof]] -dst IP:PORT -marker M [-timeout 3s]", run: runSendMarker},
}

// usageError marks a bad command line, which exits with exitUsage.
// reported is set when the flag package has already printed it.
type usageError struct {
	msg      string
	reported bool
}

func (e *usageError) Error() string { return e.msg }

// usagef returns a usageError with a formatted message.
func usagef(format string, args ...any) error {
	return &usageError{msg: fmt.Sprintf(format, args...)}
}

// lookupCommand returns the command named by name, or false.
func lookupCommand(name string) (command, bool) {
	for _, c := range commands {
		if c.name == name {
			return c, true
		}
	}
	return command{}, false
}

// selectCommand picks the command from argv, busybox style: if the
// program is invoked under a command's name (a symlink or hard link named
// "pause"), that command runs with all of argv[1:]; otherwise argv[1]
// names the command.
func selectCommand(argv []string) (command, []string, error) {
	if len(argv) > 0 {
		if c, ok := lookupCommand(filepath.Base(argv[0])); ok {
			return c, argv[1:], nil
		}
	}
	if len(argv) < 2 {
		return command{}, nil, usagef("no command given")
	}
	c, ok := lookupCommand(argv[1])
	if !ok {
		return command{}, nil, usagef("unknown command %q", argv[1])
	}
	return c, argv[2:], nil
}

// run selects and runs one command and returns the process exit code.
func run(ctx context.Context, p proc, argv []string) int {
	c, args, err := selectCommand(argv)
	if err == nil {
		err = c.run(ctx, p, newFlagSet(c, p.stderr), args)
	}
	var uerr *usageError
	switch {
	case err == nil, errors.Is(err, flag.ErrHelp):
		return exitOK
	case errors.As(err, &uerr):
		if !uerr.reported {
			fmt.Fprintf(p.stderr, "labbox: %v\n", err)
			printUsage(p.stderr)
		}
		return exitUsage
	default:
		fmt.Fprintf(p.stderr, "labbox %s: %v\n", c.name, err)
		return exitFailure
	}
}

// printUsage lists the commands.
func printUsage(w io.Writer) {
	fmt.Fprintln(w, "usage:")
	for _, c := range commands {
		fmt.Fprintf(w, "  labbox %s\n", c.synopsis)
	}
}

// newFlagSet returns a flag set for c that reports errors instead of
// exiting, so run decides the exit code, and prints c's synopsis and
// flags on a bad flag or -h.
func newFlagSet(c command, stderr io.Writer) *flag.FlagSet {
	fs := flag.NewFlagSet("labbox "+c.name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "usage: labbox %s\n", c.synopsis)
		fs.PrintDefaults()
	}
	return fs
}

// parseFlags parses args into fs. A bad flag, which the flag package has
// already printed with the usage, becomes a reported usageError; -h and
// -help pass flag.ErrHelp through.
func parseFlags(fs *flag.FlagSet, args []string) error {
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return err
		}
		return &usageError{msg: fmt.Sprintf("%s: %v", fs.Name(), err), reported: true}
	}
	return nil
}

// parseNoArgs parses the command line of a command that takes neither
// flags nor arguments.
func parseNoArgs(fs *flag.FlagSet, args []string) error {
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if fs.NArg() != 0 {
		return usagef("%s takes no arguments, got %q", fs.Name(), fs.Args())
	}
	return nil
}
