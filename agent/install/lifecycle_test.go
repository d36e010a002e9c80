package install

import (
	"context"
	"errors"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"
)

func TestBeingRemovedNeedsPositiveEvidence(t *testing.T) {
	now := metav1.Now()
	ds := func(deleting bool) *appsv1.DaemonSet {
		d := &appsv1.DaemonSet{ObjectMeta: metav1.ObjectMeta{Namespace: "nsegress-system", Name: "nsegress-agent"}}
		if deleting {
			d.DeletionTimestamp = &now
			d.Finalizers = []string{"foregroundDeletion"}
		}
		return d
	}
	failWith := func(err error) func(*fake.Clientset) {
		return func(c *fake.Clientset) {
			c.PrependReactor("get", "daemonsets", func(k8stesting.Action) (bool, runtime.Object, error) { return true, nil, err })
		}
	}
	failOnce := func(err error) func(*fake.Clientset) {
		return func(c *fake.Clientset) {
			failed := false
			c.PrependReactor("get", "daemonsets", func(k8stesting.Action) (bool, runtime.Object, error) {
				if failed {
					return false, nil, nil
				}
				failed = true
				return true, nil, err
			})
		}
	}
	gr := schema.GroupResource{Group: "apps", Resource: "daemonsets"}
	for _, tc := range []struct {
		name    string
		objects []runtime.Object
		react   func(*fake.Clientset)
		want    bool
	}{
		{"an agent restart while the DaemonSet exists keeps nsegress", []runtime.Object{ds(false)}, nil, false},
		{"a DaemonSet being deleted means uninstall", []runtime.Object{ds(true)}, nil, true},
		{"a DaemonSet whose namespace is being deleted means uninstall", []runtime.Object{ds(false), &corev1.Namespace{
			ObjectMeta: metav1.ObjectMeta{Name: "nsegress-system", DeletionTimestamp: &now, Finalizers: []string{"kubernetes"}}}}, nil, true},
		{"a DaemonSet in a namespace that stays keeps nsegress", []runtime.Object{ds(false), &corev1.Namespace{
			ObjectMeta: metav1.ObjectMeta{Name: "nsegress-system"}}}, nil, false},
		{"a DaemonSet that is gone means uninstall", nil, nil, true},
		// A token bound to a force-deleted agent pod, or a restarting API
		// server's RBAC cache: routine, never an uninstall on its own.
		{"rejected credentials keep nsegress", nil, failWith(apierrors.NewUnauthorized("token revoked")), false},
		{"a 403 keeps nsegress", nil, failWith(apierrors.NewForbidden(gr, "nsegress-agent", errors.New("no"))), false},
		{"an API server that does not answer keeps nsegress", nil, failWith(errors.New("connection refused")), false},
		{"a timeout keeps nsegress", nil, failWith(apierrors.NewTimeoutError("slow", 1)), false},
		{"a 401 that goes away keeps nsegress", []runtime.Object{ds(false)}, failOnce(apierrors.NewUnauthorized("cache not synced")), false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := fake.NewSimpleClientset(tc.objects...)
			if tc.react != nil {
				tc.react(c)
			}
			got, _, why := BeingRemoved(context.Background(), c, "nsegress-system", "nsegress-agent")
			if got != tc.want {
				t.Errorf("BeingRemoved = %v (%s), want %v", got, why, tc.want)
			}
		})
	}
}

// TestRemovalWatchRemembersAnObservedDeletion: a restart leaves the watch
// quiet; the DaemonSet being deleted, deleted, or its namespace being
// deleted is remembered, so that credentials that die afterwards do not
// hide it.
func TestRemovalWatchRemembersAnObservedDeletion(t *testing.T) {
	now := metav1.Now()
	for _, tc := range []struct {
		name   string
		change func(c *fake.Clientset) error
		want   string
	}{
		{"the DaemonSet is updated (a rolling update)", func(c *fake.Clientset) error {
			ds, err := c.AppsV1().DaemonSets("nsegress-system").Get(context.Background(), "nsegress-agent", metav1.GetOptions{})
			if err != nil {
				return err
			}
			ds.Spec.Template.Annotations = map[string]string{"restartedAt": "now"}
			_, err = c.AppsV1().DaemonSets("nsegress-system").Update(context.Background(), ds, metav1.UpdateOptions{})
			return err
		}, ""},
		{"the DaemonSet is being deleted", func(c *fake.Clientset) error {
			ds, err := c.AppsV1().DaemonSets("nsegress-system").Get(context.Background(), "nsegress-agent", metav1.GetOptions{})
			if err != nil {
				return err
			}
			ds.DeletionTimestamp = &now
			_, err = c.AppsV1().DaemonSets("nsegress-system").Update(context.Background(), ds, metav1.UpdateOptions{})
			return err
		}, "DaemonSet nsegress-system/nsegress-agent is being deleted"},
		{"the DaemonSet is deleted", func(c *fake.Clientset) error {
			return c.AppsV1().DaemonSets("nsegress-system").Delete(context.Background(), "nsegress-agent", metav1.DeleteOptions{})
		}, "DaemonSet nsegress-system/nsegress-agent was deleted"},
		{"the namespace is being deleted", func(c *fake.Clientset) error {
			ns, err := c.CoreV1().Namespaces().Get(context.Background(), "nsegress-system", metav1.GetOptions{})
			if err != nil {
				return err
			}
			ns.DeletionTimestamp = &now
			_, err = c.CoreV1().Namespaces().Update(context.Background(), ns, metav1.UpdateOptions{})
			return err
		}, "namespace nsegress-system, which holds DaemonSet nsegress-agent, is being deleted"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := fake.NewSimpleClientset(
				&appsv1.DaemonSet{ObjectMeta: metav1.ObjectMeta{Namespace: "nsegress-system", Name: "nsegress-agent"}},
				&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "nsegress-system"}})
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			w := WatchRemoval(ctx, c, "nsegress-system", "nsegress-agent")
			time.Sleep(100 * time.Millisecond) // the informers list and watch
			if err := tc.change(c); err != nil {
				t.Fatal(err)
			}
			// The credentials die: later API calls fail, the watch's
			// memory stays.
			c.PrependReactor("*", "*", func(k8stesting.Action) (bool, runtime.Object, error) {
				return true, nil, apierrors.NewUnauthorized("token of a deleted ServiceAccount")
			})
			deadline := time.Now().Add(2 * time.Second)
			for {
				seen, why := w.Seen()
				if tc.want == "" {
					if time.Now().After(deadline) {
						return
					}
					if seen {
						t.Fatalf("a restart was taken for a removal: %s", why)
					}
				} else if seen {
					if why != tc.want {
						t.Errorf("Seen = %q, want %q", why, tc.want)
					}
					return
				} else if time.Now().After(deadline) {
					t.Fatalf("the deletion was not seen")
				}
				time.Sleep(20 * time.Millisecond)
			}
		})
	}
}

func TestRemoveTaintLiftsOnlyItsOwnKey(t *testing.T) {
	node := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "w1"}, Spec: corev1.NodeSpec{Taints: []corev1.Taint{
		{Key: "nsegress.io/not-ready", Effect: corev1.TaintEffectNoSchedule},
		{Key: "other", Effect: corev1.TaintEffectNoSchedule},
	}}}
	c := fake.NewSimpleClientset(node)
	for i := 0; i < 2; i++ { // twice: the second finds nothing to do
		if err := RemoveTaint(context.Background(), c, "w1", "nsegress.io/not-ready"); err != nil {
			t.Fatal(err)
		}
	}
	got, _ := c.CoreV1().Nodes().Get(context.Background(), "w1", metav1.GetOptions{})
	if len(got.Spec.Taints) != 1 || got.Spec.Taints[0].Key != "other" {
		t.Errorf("taints = %v, want only other", got.Spec.Taints)
	}
}

// TestRemovalWatchForgetsADaemonSetThatIsBack: a DaemonSet deleted with
// --cascade=orphan and created again (to change an immutable field) is
// not an uninstall: the agents that roll later must keep nsegress.
func TestRemovalWatchForgetsADaemonSetThatIsBack(t *testing.T) {
	ds := &appsv1.DaemonSet{ObjectMeta: metav1.ObjectMeta{Namespace: "nsegress-system", Name: "nsegress-agent"}}
	c := fake.NewSimpleClientset(ds.DeepCopy(), &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "nsegress-system"}})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	w := WatchRemoval(ctx, c, "nsegress-system", "nsegress-agent")
	time.Sleep(100 * time.Millisecond)
	if err := c.AppsV1().DaemonSets("nsegress-system").Delete(ctx, "nsegress-agent", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	waitSeen := func(want bool) {
		t.Helper()
		deadline := time.Now().Add(2 * time.Second)
		for {
			seen, why := w.Seen()
			if seen == want {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("Seen = %v (%s), want %v", seen, why, want)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	waitSeen(true)
	if _, err := c.AppsV1().DaemonSets("nsegress-system").Create(ctx, ds.DeepCopy(), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	waitSeen(false)
}
