package install

import (
	"context"
	"errors"
	"fmt"
	"os"
	"sync"
	"time"

	"github.com/fsnotify/fsnotify"

	"github.com/nsegress/nsegress/agent/cniconf"
	"github.com/nsegress/nsegress/nodestate"
)

// Keeper keeps nsegress installed on a node: the plugin binary in the CNI
// bin dir, the plugin's kubeconfig, and the entry in the primary's
// conflist. Primaries such as Calico and kindnet rewrite their conflist
// at start-up, dropping our entry; the Keeper watches the conf dir and
// puts the entry back at once.
type Keeper struct {
	// BinDir is the node's CNI bin dir; PluginSrc the plugin binary to
	// copy there.
	BinDir, PluginSrc string
	// Conf edits the conf dir.
	Conf *cniconf.Installer
	// Entry is the plugin's conflist entry.
	Entry nodestate.Entry
	// Creds writes the plugin's kubeconfig; nil skips it.
	Creds *Credentials
	// Resync is how often to reconcile without a file event.
	Resync time.Duration
	// Logf receives what the Keeper does and every error.
	Logf func(format string, args ...any)

	mu      sync.Mutex
	ready   bool
	lastErr error
	lastRun time.Time // end of the last reconcile, for liveness
	renewAt time.Time
}

// Alive reports whether the loop has reconciled within three resync
// periods: a keeper stuck in a call never returns to its loop, and the
// liveness probe should restart it.
func (k *Keeper) Alive() bool {
	k.mu.Lock()
	defer k.mu.Unlock()
	return !k.lastRun.IsZero() && time.Since(k.lastRun) < 3*k.Resync
}

// Ready reports whether the plugin is installed and chained, and if not,
// why.
func (k *Keeper) Ready() (bool, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.ready, k.lastErr
}

// Run reconciles at once, then on every change in the conf dir and every
// Resync, until ctx ends. It returns an error only if it cannot watch.
func (k *Keeper) Run(ctx context.Context, becameReady func()) error {
	w, err := fsnotify.NewWatcher()
	if err != nil {
		return fmt.Errorf("watch %s: %w", k.Conf.ConfDir, err)
	}
	defer w.Close()
	if err := w.Add(k.Conf.ConfDir); err != nil {
		return fmt.Errorf("watch %s: %w", k.Conf.ConfDir, err)
	}
	// A killed agent may have left a temporary file behind.
	if err := k.Conf.CleanTemp(); err != nil {
		k.Logf("%v", err)
	}
	resync := time.NewTicker(k.Resync)
	defer resync.Stop()
	wasReady := false
	// The first pass and every resync check everything; a file event in
	// the conf dir only needs the conflist, and is on the clock: the entry
	// must be back within a second, and comparing the plugin binary cost
	// most of that on a busy node.
	full := true
	// recheck fires once, shortly after an event-driven reconcile: a
	// primary that writes its file in several steps, or writes again
	// while we read, must not leave the entry out until the next resync.
	var recheck <-chan time.Time
	for {
		k.reconcile(ctx, full)
		full = false
		if ok, _ := k.Ready(); ok && !wasReady { // why not ready is for /readyz
			wasReady = true
			if becameReady != nil {
				becameReady()
			}
		}
		select {
		case <-ctx.Done():
			return nil
		case <-resync.C:
			full = true
		case <-recheck:
			recheck = nil
		case err := <-w.Errors:
			k.Logf("watch %s: %v", k.Conf.ConfDir, err)
		case <-w.Events:
			// A rewrite is often several events (create, write, rename);
			// take them all, then reconcile once.
			drain(w.Events, 20*time.Millisecond)
			recheck = time.After(250 * time.Millisecond)
		}
	}
}

// drain swallows events until none has come for quiet.
func drain(events <-chan fsnotify.Event, quiet time.Duration) {
	for {
		select {
		case <-events:
		case <-time.After(quiet):
			return
		}
	}
}

// reconcile brings the node to the installed state and records whether
// it got there.
func (k *Keeper) reconcile(ctx context.Context, full bool) {
	start := time.Now()
	err := k.apply(ctx, full)
	if took := time.Since(start); took > 200*time.Millisecond {
		k.Logf("reconcile took %s", took.Round(time.Millisecond))
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	k.ready, k.lastErr = err == nil, err
	k.lastRun = time.Now()
	if err != nil {
		k.Logf("install: %v", err)
	}
}

func (k *Keeper) apply(ctx context.Context, full bool) error {
	// Install checks first for a foreign rename (Cilium's *.cilium_bak).
	// The binary and the token are checked on full passes only: a file
	// event is on the clock (the entry must be back within a second) and
	// neither changes when the primary rewrites its conflist.
	if full {
		if changed, err := CopyPlugin(k.PluginSrc, k.BinDir); err != nil {
			return err
		} else if changed {
			k.Logf("installed the plugin binary into %s", k.BinDir)
		}
		if err := k.renewCredentials(ctx); err != nil {
			return err
		}
	}
	res, err := k.Conf.Install(k.Entry)
	if err != nil {
		return err
	}
	if res.Changed {
		k.Logf("chained nsegress in %s (primary %s)", res.Written, res.Primary)
	}
	for _, s := range res.Skipped {
		k.Logf("skipped %s as primary: %v", s.Name, s.Err)
	}
	return nil
}

// renewCredentials writes the plugin's kubeconfig when it is due. A
// failed renewal while an earlier kubeconfig exists is only logged (its
// token is valid for a fifth of its lifetime yet) and retried at the next
// full pass; without any kubeconfig it is an error, so that a plugin that
// could not look anything up is never chained.
func (k *Keeper) renewCredentials(ctx context.Context) error {
	if k.Creds == nil || time.Now().Before(k.renewAt) {
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	renew, err := k.Creds.Write(ctx)
	if err != nil {
		if _, statErr := os.Stat(k.Creds.Path); statErr == nil {
			k.Logf("renew the plugin's kubeconfig (keeping the current one): %v", err)
			return nil
		}
		return err
	}
	k.renewAt = renew
	k.Logf("wrote the plugin's kubeconfig %s (renew at %s)", k.Creds.Path, renew.Format(time.RFC3339))
	return nil
}

// InstallOnce installs without watching: the `install` command.
func (k *Keeper) InstallOnce() error {
	return k.apply(context.Background(), true)
}

// Uninstall takes nsegress off the node: out of the conflist, then the
// binary and the kubeconfig. The binary stays while the conflist may
// still name it: a runtime that runs a chain whose plugin is missing
// fails every pod's ADD, also for pods no policy selects.
func (k *Keeper) Uninstall() error {
	res, err := k.Conf.Uninstall()
	if err != nil {
		return fmt.Errorf("take nsegress out of the conflist (the plugin binary stays): %w", err)
	}
	if res.Changed {
		k.Logf("removed nsegress from %s", res.Written)
	}
	var errs []error
	if err := RemovePlugin(k.BinDir); err != nil {
		errs = append(errs, err)
	}
	if err := os.Remove(k.Entry.Kubeconfig); err != nil && !os.IsNotExist(err) {
		errs = append(errs, fmt.Errorf("remove plugin kubeconfig: %w", err))
	}
	return errors.Join(errs...)
}
