// Package codegen_test checks the generated CRDs with the API server's own
// code (k8s.io/apiextensions-apiserver): that the API server would accept the
// CRDs, with their CEL rules compiled and within the cost limits, and that
// it accepts the valid fixtures and refuses the invalid ones with a message
// naming the field. It lives in the tools module so that the main module
// does not depend on the API server. The end-to-end suite repeats the
// acceptance checks against a real API server.
package codegen_test

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"k8s.io/apiextensions-apiserver/pkg/apis/apiextensions"
	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	crdvalidation "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/validation"
	"k8s.io/apiextensions-apiserver/pkg/apiserver/schema"
	"k8s.io/apiextensions-apiserver/pkg/apiserver/schema/cel"
	"k8s.io/apiextensions-apiserver/pkg/apiserver/schema/listtype"
	apiservervalidation "k8s.io/apiextensions-apiserver/pkg/apiserver/validation"
	"k8s.io/apimachinery/pkg/util/validation/field"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	celconfig "k8s.io/apiserver/pkg/apis/cel"
	"sigs.k8s.io/yaml"
)

const (
	crdDir     = "../../install/crds"
	fixtureDir = "../../api/v1alpha1/testdata"
)

// kindValidator validates objects of one kind as the API server does on
// create: OpenAPI schema (types, required, enum, pattern, lengths), list
// set/map uniqueness, and CEL rules.
type kindValidator struct {
	structural *schema.Structural
	openAPI    apiservervalidation.SchemaValidator
	cel        *cel.Validator
}

// validate returns the errors the API server would report for obj.
func (v *kindValidator) validate(obj map[string]any) field.ErrorList {
	errs := apiservervalidation.ValidateCustomResource(nil, obj, v.openAPI)
	errs = append(errs, listtype.ValidateListSetsAndMaps(nil, v.structural, obj)...)
	if v.cel != nil {
		celErrs, _ := v.cel.Validate(context.Background(), nil, v.structural, obj, nil, celconfig.RuntimeCELCostBudget)
		errs = append(errs, celErrs...)
	}
	return errs
}

// loadValidators reads every generated CRD, fails the test if the API
// server would refuse it, and returns a validator per kind.
func loadValidators(t *testing.T) map[string]*kindValidator {
	t.Helper()
	files, err := filepath.Glob(filepath.Join(crdDir, "nsegress.io_*.yaml"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no CRDs in %s (run tools/generate.sh): %v", crdDir, err)
	}
	validators := map[string]*kindValidator{}
	for _, file := range files {
		data, err := os.ReadFile(file)
		if err != nil {
			t.Fatal(err)
		}
		var v1crd apiextensionsv1.CustomResourceDefinition
		if err := yaml.UnmarshalStrict(data, &v1crd); err != nil {
			t.Fatalf("%s: %v", file, err)
		}
		// The API server defaults and converts a CRD to the internal
		// version before it validates it; do the same.
		apiextensionsv1.SetObjectDefaults_CustomResourceDefinition(&v1crd)
		var crd apiextensions.CustomResourceDefinition
		if err := apiextensionsv1.Convert_v1_CustomResourceDefinition_To_apiextensions_CustomResourceDefinition(&v1crd, &crd, nil); err != nil {
			t.Fatalf("%s: convert: %v", file, err)
		}
		if errs := crdvalidation.ValidateCustomResourceDefinition(context.Background(), &crd); len(errs) > 0 {
			t.Fatalf("the API server would refuse %s:\n%v", file, errs.ToAggregate())
		}
		props := schemaOf(&crd)
		if props == nil {
			t.Fatalf("%s has no schema", file)
		}
		structural, err := schema.NewStructural(props)
		if err != nil {
			t.Fatalf("%s: structural schema: %v", file, err)
		}
		openAPI, _, err := apiservervalidation.NewSchemaValidator(props)
		if err != nil {
			t.Fatalf("%s: schema validator: %v", file, err)
		}
		validators[crd.Spec.Names.Kind] = &kindValidator{
			structural: structural,
			openAPI:    openAPI,
			cel:        cel.NewValidator(structural, true, celconfig.PerCallLimit),
		}
	}
	return validators
}

// schemaOf returns the CRD's one schema. The internal version holds it at
// spec.validation when every version shares it, else per version.
func schemaOf(crd *apiextensions.CustomResourceDefinition) *apiextensions.JSONSchemaProps {
	if crd.Spec.Validation != nil {
		return crd.Spec.Validation.OpenAPIV3Schema
	}
	if len(crd.Spec.Versions) == 1 && crd.Spec.Versions[0].Schema != nil {
		return crd.Spec.Versions[0].Schema.OpenAPIV3Schema
	}
	return nil
}

// readObjects returns the YAML documents of a fixture file as unstructured
// objects.
func readObjects(t *testing.T, path string) []map[string]any {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	reader := utilyaml.NewYAMLReader(bufio.NewReader(bytes.NewReader(data)))
	var objs []map[string]any
	for {
		doc, err := reader.Read()
		if errors.Is(err, io.EOF) {
			return objs
		}
		if err != nil {
			t.Fatalf("%s: %v", path, err)
		}
		var obj map[string]any
		if err := yaml.Unmarshal(doc, &obj); err != nil {
			t.Fatalf("%s: %v", path, err)
		}
		if obj != nil {
			objs = append(objs, obj)
		}
	}
}

// check validates objs and compares the outcome with want: "" means valid,
// else every error must be reported together with the field path and
// message fragment given as "path: fragment".
func check(t *testing.T, validators map[string]*kindValidator, objs []map[string]any, want string) {
	t.Helper()
	var all field.ErrorList
	for _, obj := range objs {
		kind, _ := obj["kind"].(string)
		v := validators[kind]
		if v == nil {
			t.Fatalf("no CRD for kind %q", kind)
		}
		all = append(all, v.validate(obj)...)
	}
	switch {
	case want == "" && len(all) > 0:
		t.Errorf("refused, want accepted:\n%v", all.ToAggregate())
	case want != "" && len(all) == 0:
		t.Errorf("accepted, want refused with %q", want)
	case want != "":
		path, fragment, _ := strings.Cut(want, ": ")
		found := false
		for _, e := range all {
			found = found || (e.Field == path && strings.Contains(e.Error(), fragment))
		}
		if !found {
			t.Errorf("refused with\n%v\nwant an error on %s containing %q", all.ToAggregate(), path, fragment)
		}
	}
}

func TestTheAPIServerAcceptsTheValidFixturesAndRefusesTheInvalidOnes(t *testing.T) {
	validators := loadValidators(t)
	tests := []struct {
		file string
		want string
	}{
		{file: "seed.yaml"},
		{file: "purple.yaml"},
		{file: "invalid-policy-cidr.yaml", want: "spec.destinations[0].cidr: must be a CIDR"},
		{file: "invalid-group-ip.yaml", want: "spec.floatingIPs[1]: must be an IPv4 address"},
	}
	for _, tt := range tests {
		t.Run(tt.file, func(t *testing.T) {
			check(t, validators, readObjects(t, filepath.Join(fixtureDir, tt.file)), tt.want)
		})
	}
}

// policy returns a valid policy with one spec field replaced by the given
// YAML (a "key: value" line at spec level), or unchanged if edit is "".
func policy(t *testing.T, edit string) map[string]any {
	t.Helper()
	spec := map[string]string{
		"sources":      "[{namespaceSelector: {matchLabels: {team: purple}}}]",
		"action":       "SNAT",
		"destinations": "[{cidr: 203.0.113.0/28}]",
		"gatewayRef":   "{name: onprem, namespace: nsegress-system}",
	}
	return build(t, "EgressNATPolicy", "", spec, edit)
}

// group returns a valid group with one spec field replaced; see policy.
func group(t *testing.T, edit string) map[string]any {
	t.Helper()
	spec := map[string]string{"floatingIPs": "[198.51.100.101, 198.51.100.102]"}
	return build(t, "NetworkGatewayGroup", "nsegress-system", spec, edit)
}

// build assembles an object from spec fields; edit "key: value" sets one
// field, "key: ~drop" removes it.
func build(t *testing.T, kind, namespace string, spec map[string]string, edit string) map[string]any {
	t.Helper()
	if edit != "" {
		key, value, _ := strings.Cut(edit, ": ")
		if value == "~drop" {
			delete(spec, key)
		} else {
			spec[key] = value
		}
	}
	var b strings.Builder
	b.WriteString("apiVersion: nsegress.io/v1alpha1\nkind: " + kind + "\nmetadata: {name: x")
	if namespace != "" {
		b.WriteString(", namespace: " + namespace)
	}
	b.WriteString("}\nspec:\n")
	if len(spec) == 0 {
		b.WriteString("  {}\n")
	}
	for k, v := range spec {
		b.WriteString("  " + k + ": " + v + "\n")
	}
	var obj map[string]any
	if err := yaml.Unmarshal([]byte(b.String()), &obj); err != nil {
		t.Fatalf("test object:\n%s\n%v", b.String(), err)
	}
	return obj
}

func TestTheAPIServerChecksEachFieldWithAClearMessage(t *testing.T) {
	validators := loadValidators(t)
	tests := []struct {
		name string
		obj  func(t *testing.T) map[string]any
		want string
	}{
		{name: "a complete policy is accepted",
			obj: func(t *testing.T) map[string]any { return policy(t, "") }},
		{name: "a policy may pin an egress IP and fail open",
			obj: func(t *testing.T) map[string]any {
				obj := policy(t, "egressIP: 198.51.100.101")
				obj["spec"].(map[string]any)["failMode"] = "Open"
				return obj
			}},
		{name: "a destination as wide as one half of the address space is accepted",
			obj: func(t *testing.T) map[string]any { return policy(t, "destinations: [{cidr: 128.0.0.0/1}]") }},
		{name: "a CIDR with an octet over 255 is refused",
			obj:  func(t *testing.T) map[string]any { return policy(t, "destinations: [{cidr: 10.0.0.300/24}]") },
			want: "spec.destinations[0].cidr: must be a CIDR"},
		{name: "a bare address is not a CIDR",
			obj:  func(t *testing.T) map[string]any { return policy(t, "destinations: [{cidr: 10.0.0.1}]") },
			want: "spec.destinations[0].cidr: must be a CIDR"},
		{name: "a prefix length over 32 is refused",
			obj:  func(t *testing.T) map[string]any { return policy(t, "destinations: [{cidr: 10.0.0.0/33}]") },
			want: "spec.destinations[0].cidr: must be a CIDR"},
		{name: "an IPv6 CIDR is refused because egress IPs are IPv4",
			obj:  func(t *testing.T) map[string]any { return policy(t, "destinations: [{cidr: '2001:db8::/32'}]") },
			want: "spec.destinations[0].cidr: must be an IPv4 CIDR"},
		{name: "a CIDR with host bits set is refused",
			obj:  func(t *testing.T) map[string]any { return policy(t, "destinations: [{cidr: 10.0.0.5/24}]") },
			want: "spec.destinations[0].cidr: no bits set after the prefix length"},
		{name: "the whole address space is refused as a destination",
			obj:  func(t *testing.T) map[string]any { return policy(t, "destinations: [{cidr: 0.0.0.0/0}]") },
			want: "spec.destinations[0].cidr: must not be the whole address space"},
		{name: "the same destination twice is refused",
			obj: func(t *testing.T) map[string]any {
				return policy(t, "destinations: [{cidr: 10.0.0.0/24}, {cidr: 10.0.0.0/24}]")
			},
			want: "spec.destinations[1]: Duplicate value"},
		{name: "no destinations is refused",
			obj:  func(t *testing.T) map[string]any { return policy(t, "destinations: []") },
			want: "spec.destinations: should have at least 1 items"},
		{name: "a policy without sources is refused",
			obj:  func(t *testing.T) map[string]any { return policy(t, "sources: ~drop") },
			want: "spec.sources: Required value"},
		{name: "a source without a namespace selector is refused",
			obj:  func(t *testing.T) map[string]any { return policy(t, "sources: [{podSelector: {}}]") },
			want: "spec.sources[0].namespaceSelector: Required value"},
		{name: "an action other than SNAT is refused",
			obj:  func(t *testing.T) map[string]any { return policy(t, "action: DNAT") },
			want: `spec.action: Unsupported value: "DNAT"`},
		{name: "a gatewayRef without a namespace is refused",
			obj:  func(t *testing.T) map[string]any { return policy(t, "gatewayRef: {name: onprem}") },
			want: "spec.gatewayRef.namespace: Required value"},
		{name: "a gatewayRef namespace that is no DNS label is refused",
			obj:  func(t *testing.T) map[string]any { return policy(t, "gatewayRef: {name: onprem, namespace: Bad_NS}") },
			want: "spec.gatewayRef.namespace: Invalid value"},
		{name: "a three-octet egress IP is refused",
			obj:  func(t *testing.T) map[string]any { return policy(t, "egressIP: 1.2.3") },
			want: "spec.egressIP: must be an IPv4 address"},
		{name: "an egress IP with leading zeros is refused",
			obj:  func(t *testing.T) map[string]any { return policy(t, "egressIP: 198.051.100.1") },
			want: "spec.egressIP: must be an IPv4 address"},
		{name: "an IPv6 egress IP is refused",
			obj:  func(t *testing.T) map[string]any { return policy(t, "egressIP: '2001:db8::1'") },
			want: "spec.egressIP: must be an IPv4 address"},
		{name: "the unspecified address is no egress IP",
			obj:  func(t *testing.T) map[string]any { return policy(t, "egressIP: 0.0.0.0") },
			want: "spec.egressIP: must be a unicast address"},
		{name: "an unknown fail mode is refused",
			obj:  func(t *testing.T) map[string]any { return policy(t, "failMode: Maybe") },
			want: `spec.failMode: Unsupported value: "Maybe"`},
		{name: "a complete group is accepted",
			obj: func(t *testing.T) map[string]any { return group(t, "") }},
		{name: "a group with a three-octet floating IP is refused",
			obj:  func(t *testing.T) map[string]any { return group(t, "floatingIPs: [1.2.3]") },
			want: "spec.floatingIPs[0]: must be an IPv4 address"},
		{name: "a multicast floating IP is refused",
			obj:  func(t *testing.T) map[string]any { return group(t, "floatingIPs: [224.0.0.1]") },
			want: "spec.floatingIPs[0]: must be a unicast address"},
		{name: "the same floating IP twice is refused",
			obj: func(t *testing.T) map[string]any {
				return group(t, "floatingIPs: [198.51.100.101, 198.51.100.101]")
			},
			want: "spec.floatingIPs[1]: Duplicate value"},
		{name: "a group without floating IPs is refused",
			obj:  func(t *testing.T) map[string]any { return group(t, "floatingIPs: ~drop") },
			want: "spec.floatingIPs: Required value"},
		{name: "an empty floating IP list is refused",
			obj:  func(t *testing.T) map[string]any { return group(t, "floatingIPs: []") },
			want: "spec.floatingIPs: should have at least 1 items"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			check(t, validators, []map[string]any{tt.obj(t)}, tt.want)
		})
	}
}
