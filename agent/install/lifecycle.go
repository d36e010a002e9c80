package install

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/util/retry"
)

// BeingRemoved tells, when the agent is asked to stop, whether nsegress
// is being uninstalled (its DaemonSet deleted) or the agent merely
// restarts (an upgrade, a node drain, a crash, a force-deleted pod). Only
// positive evidence counts as removal: the DaemonSet is gone or being
// deleted, or the namespace it lives in is being deleted. Anything else,
// an API server that does not answer and rejected credentials included,
// keeps nsegress installed: a pod created meanwhile must still get its
// egress IP. Credentials die with what they are bound to (the agent's
// pod when it is force-deleted, its ServiceAccount) in routine
// operations; when `kubectl delete -k` deletes them before the
// DaemonSet, the deletion the RemovalWatch saw while the agent ran is the
// evidence.
func BeingRemoved(ctx context.Context, client kubernetes.Interface, namespace, daemonSet string) (removed, known bool, why string) {
	c, cancel := context.WithTimeout(ctx, 5*time.Second)
	ds, err := client.AppsV1().DaemonSets(namespace).Get(c, daemonSet, metav1.GetOptions{})
	cancel()
	switch {
	case err == nil && ds.DeletionTimestamp != nil:
		return true, true, fmt.Sprintf("DaemonSet %s/%s is being deleted", namespace, daemonSet)
	case err == nil && namespaceDeleting(ctx, client, namespace):
		// kubectl delete -k may delete the namespace before the
		// DaemonSet: the namespace's deletion takes the pods down while
		// the DaemonSet still stands.
		return true, true, fmt.Sprintf("namespace %s, which holds DaemonSet %s, is being deleted", namespace, daemonSet)
	case err == nil:
		return false, true, fmt.Sprintf("DaemonSet %s/%s still exists: a restart, not an uninstall", namespace, daemonSet)
	case apierrors.IsNotFound(err):
		return true, true, fmt.Sprintf("DaemonSet %s/%s is gone", namespace, daemonSet)
	}
	return false, false, fmt.Sprintf("cannot tell whether DaemonSet %s/%s exists (%v): keeping nsegress installed", namespace, daemonSet, err)
}

// RemovalWatch remembers the positive evidence of an uninstall seen while
// the agent runs: its DaemonSet deleted or being deleted, or the install
// namespace being deleted. `kubectl delete -k` deletes the agent's
// ServiceAccount and RBAC in the same breath, so by the time the agent is
// asked to stop it may no longer be allowed to look; what it saw counts
// then. An object seen again without a deletion (a DaemonSet deleted with
// --cascade=orphan and recreated) clears what was seen of it.
type RemovalWatch struct {
	mu  sync.Mutex
	why string
}

// WatchRemoval starts watching the DaemonSet and its namespace until ctx
// ends.
func WatchRemoval(ctx context.Context, client kubernetes.Interface, namespace, daemonSet string) *RemovalWatch {
	w := &RemovalWatch{}
	byName := func(name string) informers.SharedInformerOption {
		return informers.WithTweakListOptions(func(o *metav1.ListOptions) {
			o.FieldSelector = fields.OneTermEqualSelector("metadata.name", name).String()
		})
	}
	dsf := informers.NewSharedInformerFactoryWithOptions(client, 0, informers.WithNamespace(namespace), byName(daemonSet))
	nsf := informers.NewSharedInformerFactoryWithOptions(client, 0, byName(namespace))
	watch := func(inf cache.SharedIndexInformer, what string) {
		deleting := func(o any) {
			m, ok := o.(metav1.Object)
			switch {
			case ok && m.GetDeletionTimestamp() != nil:
				w.saw(what + " is being deleted")
			case ok:
				w.clear(what)
			}
		}
		_, _ = inf.AddEventHandler(cache.ResourceEventHandlerFuncs{
			AddFunc:    deleting,
			UpdateFunc: func(_, o any) { deleting(o) },
			DeleteFunc: func(any) { w.saw(what + " was deleted") },
		})
	}
	watch(dsf.Apps().V1().DaemonSets().Informer(), fmt.Sprintf("DaemonSet %s/%s", namespace, daemonSet))
	watch(nsf.Core().V1().Namespaces().Informer(), fmt.Sprintf("namespace %s, which holds DaemonSet %s,", namespace, daemonSet))
	dsf.Start(ctx.Done())
	nsf.Start(ctx.Done())
	return w
}

func (w *RemovalWatch) saw(why string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.why == "" {
		w.why = why
	}
}

// clear forgets a deletion seen of what, which exists again.
func (w *RemovalWatch) clear(what string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if strings.HasPrefix(w.why, what+" ") {
		w.why = ""
	}
}

// Seen says whether a deletion was seen, and which.
func (w *RemovalWatch) Seen() (bool, string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.why != "", w.why
}

// namespaceDeleting says whether the install namespace is being deleted;
// an error is no evidence of it.
func namespaceDeleting(ctx context.Context, client kubernetes.Interface, namespace string) bool {
	c, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	ns, err := client.CoreV1().Namespaces().Get(c, namespace, metav1.GetOptions{})
	return err == nil && ns.DeletionTimestamp != nil
}

// RemoveTaint removes the taint with key from node, if present. Operators
// register nodes with that taint so that no pod lands before nsegress is
// chained; the agent lifts it once it is.
func RemoveTaint(ctx context.Context, client kubernetes.Interface, node, key string) error {
	return retry.RetryOnConflict(retry.DefaultRetry, func() error {
		n, err := client.CoreV1().Nodes().Get(ctx, node, metav1.GetOptions{})
		if err != nil {
			return err
		}
		var keep []corev1.Taint
		for _, t := range n.Spec.Taints {
			if t.Key != key {
				keep = append(keep, t)
			}
		}
		if len(keep) == len(n.Spec.Taints) {
			return nil
		}
		n.Spec.Taints = keep
		_, err = client.CoreV1().Nodes().Update(ctx, n, metav1.UpdateOptions{})
		return err
	})
}
