package e2e

import (
	"context"
	"strings"
	"testing"
)

// TestCRDsInstallAndValidate applies the generated CRDs to the real API
// server: the seed's own manifests are accepted, bad CIDRs and IPs are
// refused with a message that names the field.
func TestCRDsInstallAndValidate(t *testing.T) {
	c := cluster(t)
	ctx := context.Background()
	if out, err := kubectl(ctx, c, "", "apply", "-k", "../install/crds"); err != nil {
		t.Fatalf("install the CRDs: %v\n%s", err, out)
	}
	if out, err := kubectl(ctx, c, "", "wait", "--for=condition=Established", "--timeout=30s",
		"crd/egressnatpolicies.nsegress.io", "crd/networkgatewaygroups.nsegress.io"); err != nil {
		t.Fatalf("CRDs not established: %v\n%s", err, out)
	}
	if out, err := kubectl(ctx, c, "", "create", "namespace", "nsegress-system"); err != nil && !strings.Contains(out, "AlreadyExists") {
		t.Fatal(err)
	}

	for _, fixture := range []string{"seed.yaml", "purple.yaml"} {
		t.Run("the API server accepts "+fixture, func(t *testing.T) {
			path := "../api/v1alpha1/testdata/" + fixture
			if out, err := kubectl(ctx, c, "", "apply", "-f", path); err != nil {
				t.Fatalf("apply %s: %v\n%s", fixture, err, out)
			}
		})
		t.Cleanup(func() {
			_, _ = kubectl(context.Background(), c, "", "delete", "-f", "../api/v1alpha1/testdata/"+fixture)
		})
	}

	t.Run("printer columns show egress IP, gateway node and readiness", func(t *testing.T) {
		out, err := kubectl(ctx, c, "", "get", "egressnatpolicies")
		if err != nil {
			t.Fatal(err)
		}
		header := strings.SplitN(out, "\n", 2)[0]
		for _, col := range []string{"EGRESS IP", "GATEWAY NODE", "READY"} {
			if !strings.Contains(header, col) {
				t.Errorf("kubectl get egressnatpolicies header %q lacks %s", header, col)
			}
		}
	})

	for _, tc := range []struct{ fixture, field, value string }{
		{"invalid-policy-cidr.yaml", "cidr", "10.0.0.300/24"},
		{"invalid-group-ip.yaml", "floatingIPs", "1.2.3"},
	} {
		t.Run("the API server rejects "+tc.value, func(t *testing.T) {
			out, err := kubectl(ctx, c, "", "apply", "-f", "../api/v1alpha1/testdata/"+tc.fixture)
			if err == nil {
				_, _ = kubectl(context.Background(), c, "", "delete", "-f", "../api/v1alpha1/testdata/"+tc.fixture)
				t.Fatalf("%s was accepted:\n%s", tc.fixture, out)
			}
			if !strings.Contains(out, tc.field) || !strings.Contains(out, "Invalid") {
				t.Errorf("rejection of %s does not name the field %s:\n%s", tc.value, tc.field, out)
			}
		})
	}
}
