package v1alpha1

import (
	"path/filepath"
	"testing"

	"github.com/google/go-cmp/cmp"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
)

// typeMeta returns the TypeMeta a decoded fixture object carries.
func typeMeta(kind string) metav1.TypeMeta {
	return metav1.TypeMeta{APIVersion: SchemeGroupVersion.String(), Kind: kind}
}

// selector returns a label selector matching exactly the given labels.
func selector(kv ...string) *metav1.LabelSelector {
	labels := map[string]string{}
	for i := 0; i+1 < len(kv); i += 2 {
		labels[kv[i]] = kv[i+1]
	}
	return &metav1.LabelSelector{MatchLabels: labels}
}

func TestFixturesDecodeToTheObjectsTheySpell(t *testing.T) {
	tests := []struct {
		name string
		file string
		want []runtime.Object
	}{
		{
			name: "the seed's manifests keep their names, selectors, CIDR, gateway and status",
			file: "seed.yaml",
			want: []runtime.Object{
				&EgressNATPolicy{
					TypeMeta:   typeMeta("EgressNATPolicy"),
					ObjectMeta: metav1.ObjectMeta{Name: "egress"},
					Spec: EgressNATPolicySpec{
						Sources: []EgressSource{
							{NamespaceSelector: *selector("user", "alice"), PodSelector: selector("role", "frontend")},
							{NamespaceSelector: *selector("user", "paul"), PodSelector: selector("role", "frontend")},
						},
						Action:       ActionSNAT,
						Destinations: []EgressDestination{{CIDR: "8.8.8.0/24"}},
						GatewayRef:   GatewayRef{Name: "default", Namespace: "kube-system"},
					},
				},
				&NetworkGatewayGroup{
					TypeMeta:   typeMeta("NetworkGatewayGroup"),
					ObjectMeta: metav1.ObjectMeta{Name: "default", Namespace: "kube-system"},
					Spec: NetworkGatewayGroupSpec{
						FloatingIPs: []string{"192.168.1.100", "192.168.1.101", "192.168.1.102"},
					},
					Status: NetworkGatewayGroupStatus{
						Nodes: map[string]GatewayNodeState{"worker1": GatewayNodeUp, "worker2": GatewayNodeUp},
						FloatingIPs: map[string]string{
							"192.168.1.100": "worker1",
							"192.168.1.101": "worker2",
							"192.168.1.102": "worker1",
						},
					},
				},
			},
		},
		{
			name: "the purple example pins egress IP P on the onprem group's gateway nodes",
			file: "purple.yaml",
			want: []runtime.Object{
				&EgressNATPolicy{
					TypeMeta:   typeMeta("EgressNATPolicy"),
					ObjectMeta: metav1.ObjectMeta{Name: "purple"},
					Spec: EgressNATPolicySpec{
						Sources: []EgressSource{
							{NamespaceSelector: *selector("team", "purple"), PodSelector: &metav1.LabelSelector{}},
						},
						Action:       ActionSNAT,
						Destinations: []EgressDestination{{CIDR: "203.0.113.0/28"}},
						GatewayRef:   GatewayRef{Name: "onprem", Namespace: "nsegress-system"},
						EgressIP:     "198.51.100.101",
						FailMode:     FailModeClosed,
					},
				},
				&NetworkGatewayGroup{
					TypeMeta:   typeMeta("NetworkGatewayGroup"),
					ObjectMeta: metav1.ObjectMeta{Name: "onprem", Namespace: "nsegress-system"},
					Spec: NetworkGatewayGroupSpec{
						FloatingIPs:  []string{"198.51.100.101", "198.51.100.102", "198.51.100.103"},
						NodeSelector: selector("nsegress.io/gateway", "true"),
					},
				},
			},
		},
		{
			name: "the invalid policy fixture carries the out-of-range CIDR the API server must refuse",
			file: "invalid-policy-cidr.yaml",
			want: []runtime.Object{
				&EgressNATPolicy{
					TypeMeta:   typeMeta("EgressNATPolicy"),
					ObjectMeta: metav1.ObjectMeta{Name: "invalid-cidr"},
					Spec: EgressNATPolicySpec{
						Sources:      []EgressSource{{NamespaceSelector: *selector("team", "purple")}},
						Action:       ActionSNAT,
						Destinations: []EgressDestination{{CIDR: "10.0.0.300/24"}},
						GatewayRef:   GatewayRef{Name: "onprem", Namespace: "nsegress-system"},
					},
				},
			},
		},
		{
			name: "the invalid group fixture carries the three-octet IP the API server must refuse",
			file: "invalid-group-ip.yaml",
			want: []runtime.Object{
				&NetworkGatewayGroup{
					TypeMeta:   typeMeta("NetworkGatewayGroup"),
					ObjectMeta: metav1.ObjectMeta{Name: "invalid-ip", Namespace: "nsegress-system"},
					Spec:       NetworkGatewayGroupSpec{FloatingIPs: []string{"198.51.100.101", "1.2.3"}},
				},
			},
		},
	}
	scheme := newTestScheme(t)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := decodeFile(t, scheme, filepath.Join("testdata", tt.file))
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("%s decoded differently (-want +got):\n%s", tt.file, diff)
			}
		})
	}
}
