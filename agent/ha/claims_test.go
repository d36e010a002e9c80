package ha

import (
	"context"
	"net/netip"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	kubefake "k8s.io/client-go/kubernetes/fake"

	"github.com/nsegress/nsegress/api/v1alpha1"
)

func TestClaimsAreRecordedOnTheNodeAndClearedAtUninstall(t *testing.T) {
	cs := kubefake.NewClientset(&corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "gw-2"}})
	w := NewClaimWriter(cs, "gw-2", t.Logf)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx) }()
	w.Set(map[netip.Addr]int64{ip1: 3})
	annotation := func() string {
		n, err := cs.CoreV1().Nodes().Get(context.Background(), "gw-2", metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		return n.Annotations[v1alpha1.ClaimsAnnotation]
	}
	deadline := time.Now().Add(5 * time.Second)
	for annotation() == "" && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	got, err := v1alpha1.ParseClaims(annotation())
	if err != nil || got[ip1.String()].Epoch != 3 || got[ip1.String()].Reason != v1alpha1.MovePeerDead {
		t.Fatalf("claims on the node = %v, %v; want %s at epoch 3, PeerDead", got, err, ip1)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if err := w.Clear(context.Background()); err != nil {
		t.Fatal(err)
	}
	if a := annotation(); a != "" {
		t.Errorf("after Clear the node still has %q", a)
	}
}
