package e2e

import (
	"context"
	"os"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/nsegress/nsegress/e2e/lab"
	"github.com/nsegress/nsegress/e2e/privtest"
)

// TestDaemonSetHostPathLandsOnItsOwnNode is what the installer relies on:
// a DaemonSet pod that writes into hostPath /opt/cni/bin writes into its
// own node's folder, and nowhere else.
func TestDaemonSetHostPathLandsOnItsOwnNode(t *testing.T) {
	c := cluster(t)
	cs := clientset(t, c)
	ctx := context.Background()
	const ns, marker = "lab-hostpath", "/opt/cni/bin/lab-hostpath-marker"
	testNamespace(t, cs, ns, nil)

	labels := map[string]string{"app": "marker"}
	grace := int64(1)
	ds := &appsv1.DaemonSet{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "marker"},
		Spec: appsv1.DaemonSetSpec{
			Selector: &metav1.LabelSelector{MatchLabels: labels},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: labels},
				Spec: corev1.PodSpec{
					TerminationGracePeriodSeconds: &grace,
					Tolerations:                   []corev1.Toleration{{Operator: corev1.TolerationOpExists}},
					Containers: []corev1.Container{{
						Name:            "marker",
						Image:           lab.LabboxImage,
						ImagePullPolicy: corev1.PullNever,
						Command:         []string{"/labbox", "write-file", "-path", "/host" + marker},
						Env: []corev1.EnvVar{{Name: "NODE_NAME", ValueFrom: &corev1.EnvVarSource{
							FieldRef: &corev1.ObjectFieldSelector{FieldPath: "spec.nodeName"}}}},
						VolumeMounts: []corev1.VolumeMount{{Name: "cni-bin", MountPath: "/host/opt/cni/bin"}},
					}},
					Volumes: []corev1.Volume{{Name: "cni-bin", VolumeSource: corev1.VolumeSource{
						HostPath: &corev1.HostPathVolumeSource{Path: "/opt/cni/bin"}}}},
				},
			},
		},
	}
	if _, err := cs.AppsV1().DaemonSets(ns).Create(ctx, ds, metav1.CreateOptions{}); err != nil {
		t.Fatalf("create DaemonSet: %v", err)
	}
	for _, n := range c.Nodes() {
		privtest.Eventually(t, 60*time.Second, "marker on "+n.Name, func() (bool, error) {
			b, err := c.ReadNodeFile(n.Name, marker)
			return err == nil && string(b) == n.Name, err
		})
	}
	if _, err := os.Stat(marker); !os.IsNotExist(err) {
		t.Errorf("the machine's own %s exists (err=%v): the hostPath escaped the node", marker, err)
	}
}
