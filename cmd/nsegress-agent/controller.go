package main

import (
	"context"
	"errors"
	"fmt"
	"log"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"

	"k8s.io/client-go/kubernetes"

	"github.com/nsegress/nsegress/agent/controller"
	"github.com/nsegress/nsegress/agent/ha"
)

// runController is the controller Deployment's process: it stands for
// election and, while it leads, assigns tunnel IDs and floating IPs and
// writes status. It also creates the gateways' HA key, which agents only
// read. It runs under its own ServiceAccount: the agents on the nodes
// cannot write status, placement, the Lease or the key.
func runController(o options) error {
	logger := log.New(os.Stderr, "", log.LstdFlags|log.Lmicroseconds)
	if o.namespace == "" {
		return errors.New("the namespace is required (flag -namespace, or env POD_NAMESPACE)")
	}
	identity := o.podName
	if identity == "" {
		h, err := os.Hostname()
		if err != nil {
			return fmt.Errorf("no identity for the election (flag -pod-name, or env POD_NAME): %w", err)
		}
		identity = h
	}
	_, client, dyn, err := apiClients(o.apiKubeconfig)
	if err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	go ensureKey(ctx, client, o.namespace, o.haKeySecret, logger.Printf)

	mux := http.NewServeMux()
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) { fmt.Fprintln(w, "ok") })
	closeHealth, err := serveHealth(&http.Server{Addr: o.healthAddr, Handler: mux, ReadHeaderTimeout: 5 * time.Second}, logger.Printf)
	if err != nil {
		return err
	}
	defer closeHealth()

	logger.Printf("controller %s: standing for election in %s", identity, o.namespace)
	err = controller.Run(ctx, controller.Config{
		Client: client, Dynamic: dyn, Namespace: o.namespace, Identity: identity, Logf: logger.Printf,
	})
	if ctx.Err() != nil {
		logger.Printf("stopping")
		return nil
	}
	if err == nil {
		err = errors.New("the controller returned")
	}
	return err
}

// ensureKey creates the HA key Secret if it is missing, retrying until it
// exists or ctx ends.
func ensureKey(ctx context.Context, client kubernetes.Interface, namespace, name string, logf func(string, ...any)) {
	retryUntil(ctx, "the HA key", logf, func(c context.Context) error {
		return ha.EnsureKey(c, client, namespace, name)
	})
}
