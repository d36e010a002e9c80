package main

import (
	"context"
	"flag"
)

// runSleep implements "labbox sleep": it does nothing until SIGTERM or
// SIGINT, for pods that only need to exist (a client to kubectl exec in).
func runSleep(ctx context.Context, _ proc, fs *flag.FlagSet, args []string) error {
	if err := parseNoArgs(fs, args); err != nil {
		return err
	}
	<-ctx.Done()
	return nil
}
