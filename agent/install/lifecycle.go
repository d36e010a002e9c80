package install

import (
	"context"
	"fmt"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/util/retry"
)

// BeingRemoved tells, when the agent is asked to stop, whether nsegress
// is being uninstalled (its DaemonSet deleted) or the agent merely
// restarts (an upgrade, a node drain, a crash). Only positive evidence
// counts as removal: the DaemonSet is gone or being deleted, or the
// namespace it lives in is being deleted, or the agent's credentials were
// revoked with it (its ServiceAccount or RBAC
// deleted by the same `kubectl delete -k`). Any other error, such as an
// API server that does not answer, keeps nsegress installed: a pod
// created meanwhile must still get its egress IP.
func BeingRemoved(ctx context.Context, client kubernetes.Interface, namespace, daemonSet string) (bool, string) {
	return beingRemoved(ctx, client, namespace, daemonSet, time.Second)
}

// beingRemoved is BeingRemoved with the pause between tries as a
// parameter. A 401 or 403 counts only when it persists over three tries:
// an API server that restarts and has not synced its RBAC yet, or a
// signing key that rotates, must not uninstall nsegress from a node.
func beingRemoved(ctx context.Context, client kubernetes.Interface, namespace, daemonSet string, pause time.Duration) (bool, string) {
	const tries = 3
	for try := 1; ; try++ {
		c, cancel := context.WithTimeout(ctx, 5*time.Second)
		ds, err := client.AppsV1().DaemonSets(namespace).Get(c, daemonSet, metav1.GetOptions{})
		cancel()
		switch {
		case err == nil && ds.DeletionTimestamp != nil:
			return true, fmt.Sprintf("DaemonSet %s/%s is being deleted", namespace, daemonSet)
		case err == nil && namespaceDeleting(ctx, client, namespace):
			// kubectl delete -k may delete the namespace before the
			// DaemonSet: the namespace's deletion takes the pods down
			// while the DaemonSet still stands.
			return true, fmt.Sprintf("namespace %s, which holds DaemonSet %s, is being deleted", namespace, daemonSet)
		case err == nil:
			return false, fmt.Sprintf("DaemonSet %s/%s still exists: a restart, not an uninstall", namespace, daemonSet)
		case apierrors.IsNotFound(err):
			return true, fmt.Sprintf("DaemonSet %s/%s is gone", namespace, daemonSet)
		case apierrors.IsUnauthorized(err) || apierrors.IsForbidden(err):
			if try == tries {
				return true, fmt.Sprintf("the agent's credentials were revoked (%v, %d times): the install is being deleted", err, tries)
			}
			time.Sleep(pause)
		default:
			return false, fmt.Sprintf("cannot tell whether DaemonSet %s/%s exists (%v): keeping nsegress installed", namespace, daemonSet, err)
		}
	}
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
