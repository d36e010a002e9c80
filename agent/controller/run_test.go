package controller

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	dynamicfake "k8s.io/client-go/dynamic/fake"
	kubefake "k8s.io/client-go/kubernetes/fake"

	"github.com/nsegress/nsegress/api/v1alpha1"
	"github.com/nsegress/nsegress/e2e/privtest"
)

func TestConfigIsChecked(t *testing.T) {
	client := kubefake.NewClientset()
	dyn := dynamicfake.NewSimpleDynamicClientWithCustomListKinds(runtime.NewScheme(), listKinds)
	tests := []struct {
		name string
		cfg  Config
		want string
	}{
		{"no client", Config{Dynamic: dyn, Namespace: ns, Identity: "gw-1"}, "Client"},
		{"no dynamic client", Config{Client: client, Namespace: ns, Identity: "gw-1"}, "Dynamic"},
		{"no namespace", Config{Client: client, Dynamic: dyn, Identity: "gw-1"}, "Namespace"},
		{"no identity", Config{Client: client, Dynamic: dyn, Namespace: ns}, "Identity"},
		{"a renew deadline longer than the lease", Config{Client: client, Dynamic: dyn, Namespace: ns, Identity: "gw-1",
			LeaseDuration: time.Second, RenewDeadline: 2 * time.Second}, "leaseDuration"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := Run(context.Background(), tt.cfg)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("Run = %v; want an error about %s", err, tt.want)
			}
		})
	}
}

// TestRunLeadsAndReconciles runs the whole loop against fake API servers:
// it takes the Lease, writes status, follows a node going down, and gives
// the Lease up when stopped.
func TestRunLeadsAndReconciles(t *testing.T) {
	gw1, gw2 := readyNode("gw-1", nil), readyNode("gw-2", nil)
	client := kubefake.NewClientset(&gw1, &gw2)
	p := policy("purple", 0)
	g := group([]string{ip1}, nil)
	dyn := dynamicfake.NewSimpleDynamicClientWithCustomListKinds(runtime.NewScheme(), listKinds,
		unstructuredOf(t, &p), unstructuredOf(t, &g))
	logs := &logBuffer{}

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() {
		done <- Run(ctx, Config{
			Client: client, Dynamic: dyn, Namespace: ns, Identity: "gw-1",
			Resync:        time.Hour, // events only: the test must not pass on a resync
			LeaseDuration: 3 * time.Second, RenewDeadline: 2 * time.Second, RetryPeriod: 100 * time.Millisecond,
			Logf: logs.logf,
		})
	}()

	status := func() v1alpha1.EgressNATPolicyStatus {
		u, err := dyn.Resource(policiesGVR).Get(ctx, "purple", metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		var got v1alpha1.EgressNATPolicy
		if err := runtime.DefaultUnstructuredConverter.FromUnstructured(u.Object, &got); err != nil {
			t.Fatal(err)
		}
		return got.Status
	}
	waitFor := func(what string, ok func(v1alpha1.EgressNATPolicyStatus) bool) {
		t.Helper()
		privtest.Eventually(t, 20*time.Second, what, func() (bool, error) {
			if s := status(); !ok(s) {
				return false, fmt.Errorf("status %+v; log:\n%s", s, logs)
			}
			return true, nil
		})
	}

	waitFor("the first assignment", func(s v1alpha1.EgressNATPolicyStatus) bool {
		return s.EgressIP == ip1 && s.GatewayNode == "gw-1" && s.TunnelID == 1
	})
	lease, err := client.CoordinationV1().Leases(ns).Get(ctx, LeaseName, metav1.GetOptions{})
	if err != nil {
		t.Fatalf("get the Lease: %v", err)
	}
	if h := lease.Spec.HolderIdentity; h == nil || *h != "gw-1" {
		t.Errorf("Lease holder = %v, want gw-1", h)
	}

	gw1.Status.Conditions[0].Status = corev1.ConditionFalse
	gw1.ResourceVersion = "2"
	if _, err := client.CoreV1().Nodes().Update(ctx, &gw1, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	waitFor("the failover to gw-2", func(s v1alpha1.EgressNATPolicyStatus) bool {
		return s.EgressIP == ip1 && s.GatewayNode == "gw-2"
	})

	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("Run = %v, want nil", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Run did not return after its context ended")
	}
	lease, err = client.CoordinationV1().Leases(ns).Get(context.Background(), LeaseName, metav1.GetOptions{})
	if err != nil {
		t.Fatalf("get the Lease: %v", err)
	}
	if h := lease.Spec.HolderIdentity; h != nil && *h != "" {
		t.Errorf("Lease still held by %q after Run returned", *h)
	}
	for _, w := range []string{"gw-1 leads", "gateway node gw-2", "gw-1 stopped leading"} {
		if !strings.Contains(logs.String(), w) {
			t.Errorf("log lacks %q:\n%s", w, logs)
		}
	}
}
