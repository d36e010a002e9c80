package e2e

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/kubernetes"

	"github.com/nsegress/nsegress/e2e/lab"
	"github.com/nsegress/nsegress/e2e/privtest"
)

// backendService creates in ns a NodePort Service without a selector whose
// one endpoint is the on-prem backend b, as a cluster would front a
// database outside it, and returns it with its ClusterIP and node port
// allocated.
func backendService(t testing.TB, cs kubernetes.Interface, ns, name string, b lab.Backend) *corev1.Service {
	t.Helper()
	ctx := context.Background()
	svc, err := cs.CoreV1().Services(ns).Create(ctx, &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
		Spec: corev1.ServiceSpec{
			Type:  corev1.ServiceTypeNodePort,
			Ports: []corev1.ServicePort{{Protocol: corev1.ProtocolTCP, Port: 80, TargetPort: intstr.FromInt32(int32(b.Port))}},
		},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("create Service %s/%s: %v", ns, name, err)
	}
	t.Cleanup(func() {
		_ = cs.CoreV1().Services(ns).Delete(context.Background(), name, metav1.DeleteOptions{})
	})
	port, proto, ready := int32(b.Port), corev1.ProtocolTCP, true
	_, err = cs.DiscoveryV1().EndpointSlices(ns).Create(ctx, &discoveryv1.EndpointSlice{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name + "-1", Labels: map[string]string{
			discoveryv1.LabelServiceName: name,
			// Tells the EndpointSlice mirroring and selector controllers
			// that the slice is ours to keep.
			discoveryv1.LabelManagedBy: "nsegress-e2e",
		}},
		AddressType: discoveryv1.AddressTypeIPv4,
		Endpoints: []discoveryv1.Endpoint{{
			Addresses:  []string{b.IP.String()},
			Conditions: discoveryv1.EndpointConditions{Ready: &ready},
		}},
		Ports: []discoveryv1.EndpointPort{{Protocol: &proto, Port: &port}},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("create the EndpointSlice of %s/%s: %v", ns, name, err)
	}
	t.Cleanup(func() {
		_ = cs.DiscoveryV1().EndpointSlices(ns).Delete(context.Background(), name+"-1", metav1.DeleteOptions{})
	})
	if svc.Spec.ClusterIP == "" || svc.Spec.Ports[0].NodePort == 0 {
		t.Fatalf("Service %s/%s got no ClusterIP or node port: %+v", ns, name, svc.Spec)
	}
	return svc
}

// TestLabServices checks that the lab runs Services as any cluster does:
// kube-proxy on every node DNATs a ClusterIP to a pod on another node and
// the kubernetes Service to the API server.
func TestLabServices(t *testing.T) {
	c := cluster(t)
	cs := clientset(t, c)
	ctx := context.Background()
	const ns = "lab-services"
	testNamespace(t, cs, ns, nil)
	nodes := c.Nodes()
	client := echoPod(ns, "client", nodes[0].Name)
	target := echoPod(ns, "target", nodes[len(nodes)-1].Name)
	target.Labels = map[string]string{"app": "target"}
	pods := runPods(t, cs, client, target)

	svc, err := cs.CoreV1().Services(ns).Create(ctx, &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "target"},
		Spec: corev1.ServiceSpec{
			Selector: map[string]string{"app": "target"},
			Ports:    []corev1.ServicePort{{Protocol: corev1.ProtocolTCP, Port: 80, TargetPort: intstr.FromInt32(8080)}},
		},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}

	t.Run("a ClusterIP reaches the pod it selects on another node", func(t *testing.T) {
		url := fmt.Sprintf("http://%s/", svc.Spec.ClusterIP)
		// The endpoint controller and then every kube-proxy must have
		// seen the pod before the address answers.
		privtest.Eventually(t, 30*time.Second, "ClusterIP "+svc.Spec.ClusterIP+" answering", func() (bool, error) {
			out, err := execIn(ctx, c, ns, "client", "/labbox", "get", "-timeout", "2s", url)
			if err != nil {
				return false, nil
			}
			// Pod to pod across nodes: ptp may masquerade to the node's
			// address; kube-proxy adds no masquerade of its own.
			if out != pods[0].Status.PodIP && out != nodes[0].IP.String() {
				return false, fmt.Errorf("the target saw source %q, want %s or %s", out, pods[0].Status.PodIP, nodes[0].IP)
			}
			return true, nil
		})
		logs, err := kubectl(ctx, c, "", "logs", "-n", ns, "target")
		if err != nil || !strings.Contains(logs, "GET ") {
			t.Errorf("the target pod logged no request: %v\n%s", err, logs)
		}
	})

	t.Run("the kubernetes Service reaches the API server", func(t *testing.T) {
		k, err := cs.CoreV1().Services("default").Get(ctx, "kubernetes", metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		// labbox does not trust the lab's CA: a handshake that fails on
		// the certificate proves the API server answered at the ClusterIP.
		out, err := execIn(ctx, c, ns, "client", "/labbox", "get", "-timeout", "3s",
			fmt.Sprintf("https://%s:%d/version", k.Spec.ClusterIP, k.Spec.Ports[0].Port))
		if err == nil || !strings.Contains(out, "certificate") {
			t.Errorf("https://%s/: got %q, %v; want a TLS error about the API server's certificate", k.Spec.ClusterIP, out, err)
		}
	})
}
