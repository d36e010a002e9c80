package main

import (
	"context"
	"flag"
	"os"
	"os/signal"
	"syscall"
)

// runPause implements "labbox pause", the process of a pod sandbox. It
// holds the pod's namespaces open until SIGTERM or SIGINT. As PID 1 of
// the pod's PID namespace (with shareProcessNamespace, or when a child's
// parent dies) it inherits orphans, so it reaps every child that exits
// lest zombies pile up.
func runPause(ctx context.Context, _ proc, fs *flag.FlagSet, args []string) error {
	if err := parseNoArgs(fs, args); err != nil {
		return err
	}
	sigchld := make(chan os.Signal, 1)
	signal.Notify(sigchld, syscall.SIGCHLD)
	defer signal.Stop(sigchld)
	// A child may have exited before Notify took effect; reap once now.
	reapChildren()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-sigchld:
			// Signals coalesce: one SIGCHLD can stand for many exits.
			reapChildren()
		}
	}
}

// reapChildren collects every child that has exited, without blocking.
func reapChildren() {
	for {
		var status syscall.WaitStatus
		pid, err := syscall.Wait4(-1, &status, syscall.WNOHANG, nil)
		if err == syscall.EINTR {
			continue
		}
		// pid 0: children remain but none has exited; ECHILD: no children.
		if pid <= 0 || err != nil {
			return
		}
	}
}
