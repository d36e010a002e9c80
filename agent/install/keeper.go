package install

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/fsnotify/fsnotify"

	"github.com/nsegress/nsegress/agent/cniconf"
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
	Entry cniconf.Entry
	// Creds writes the plugin's kubeconfig; nil skips it.
	Creds *Credentials
	// Resync is how often to reconcile without a file event.
	Resync time.Duration
	// Logf receives what the Keeper does and every error.
	Logf func(format string, args ...any)

	mu      sync.Mutex
	ready   bool
	lastErr error
	renewAt time.Time
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
	for {
		k.reconcile(ctx)
		if ok, _ := k.Ready(); ok && !wasReady {
			wasReady = true
			if becameReady != nil {
				becameReady()
			}
		}
		select {
		case <-ctx.Done():
			return nil
		case <-resync.C:
		case err := <-w.Errors:
			k.Logf("watch %s: %v", k.Conf.ConfDir, err)
		case <-w.Events:
			// A rewrite is often several events (create, write, rename);
			// take them all, then reconcile once.
			drain(w.Events, 20*time.Millisecond)
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
func (k *Keeper) reconcile(ctx context.Context) {
	start := time.Now()
	err := k.apply(ctx)
	if took := time.Since(start); took > 200*time.Millisecond {
		k.Logf("reconcile took %s", took.Round(time.Millisecond))
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	k.ready, k.lastErr = err == nil, err
	if err != nil {
		k.Logf("install: %v", err)
	}
}

func (k *Keeper) apply(ctx context.Context) error {
	if err := k.Conf.CheckForeignRename(); err != nil {
		return err
	}
	t0 := time.Now()
	if changed, err := CopyPlugin(k.PluginSrc, k.BinDir); err != nil {
		return err
	} else if changed {
		k.Logf("installed the plugin binary into %s", k.BinDir)
	}
	t1 := time.Now()
	defer func() {
		if took := time.Since(t0); took > 200*time.Millisecond {
			k.Logf("reconcile: plugin copy %s, rest %s", t1.Sub(t0).Round(time.Millisecond), time.Since(t1).Round(time.Millisecond))
		}
	}()
	if k.Creds != nil && time.Now().After(k.renewAt) {
		renew, err := k.Creds.Write(ctx)
		if err != nil {
			return err
		}
		k.renewAt = renew
		k.Logf("wrote the plugin's kubeconfig %s (renew at %s)", k.Creds.Path, renew.Format(time.RFC3339))
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

// InstallOnce installs without watching: the `install` command.
func (k *Keeper) InstallOnce() error {
	return k.apply(context.Background())
}

// Uninstall takes nsegress off the node: out of the conflist, then the
// binary and the kubeconfig.
func (k *Keeper) Uninstall() error {
	var errs []error
	if res, err := k.Conf.Uninstall(); err != nil {
		errs = append(errs, err)
	} else if res.Changed {
		k.Logf("removed nsegress from %s", res.Written)
	}
	if err := RemovePlugin(k.BinDir); err != nil {
		errs = append(errs, err)
	}
	if k.Creds != nil {
		if err := k.Creds.Remove(); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}
