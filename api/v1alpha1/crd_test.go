package v1alpha1

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"sigs.k8s.io/yaml"
)

// crdDir holds the CRDs that tools/generate.sh writes from this package.
const crdDir = "../../install/crds"

// crd is the part of an apiextensions.k8s.io/v1 CustomResourceDefinition the
// tests read. It is declared here because k8s.io/apiextensions-apiserver is
// not a dependency of the module.
type crd struct {
	Kind string `json:"kind"`
	Spec struct {
		Group string `json:"group"`
		Names struct {
			Kind       string   `json:"kind"`
			Plural     string   `json:"plural"`
			ShortNames []string `json:"shortNames"`
		} `json:"names"`
		Scope    string       `json:"scope"`
		Versions []crdVersion `json:"versions"`
	} `json:"spec"`
}

// crdVersion is one entry of a CRD's spec.versions.
type crdVersion struct {
	Name         string `json:"name"`
	Served       bool   `json:"served"`
	Storage      bool   `json:"storage"`
	Subresources struct {
		Status *struct{} `json:"status"`
	} `json:"subresources"`
	AdditionalPrinterColumns []struct {
		Name     string `json:"name"`
		Type     string `json:"type"`
		JSONPath string `json:"jsonPath"`
		Priority int    `json:"priority"`
	} `json:"additionalPrinterColumns"`
	Schema struct {
		OpenAPIV3Schema *schemaNode `json:"openAPIV3Schema"`
	} `json:"schema"`
}

// schemaNode is a JSONSchemaProps, reduced to what the tests check.
type schemaNode struct {
	Type                 string                 `json:"type"`
	Format               string                 `json:"format"`
	Enum                 []string               `json:"enum"`
	Default              any                    `json:"default"`
	Required             []string               `json:"required"`
	Pattern              string                 `json:"pattern"`
	Minimum              *float64               `json:"minimum"`
	MinLength            *int                   `json:"minLength"`
	MaxLength            *int                   `json:"maxLength"`
	MinItems             *int                   `json:"minItems"`
	MaxItems             *int                   `json:"maxItems"`
	Properties           map[string]*schemaNode `json:"properties"`
	Items                *schemaNode            `json:"items"`
	AdditionalProperties *schemaNode            `json:"additionalProperties"`
	ListType             string                 `json:"x-kubernetes-list-type"`
	ListMapKeys          []string               `json:"x-kubernetes-list-map-keys"`
	Validations          []celRule              `json:"x-kubernetes-validations"`
}

// celRule is one x-kubernetes-validations entry.
type celRule struct {
	Rule    string `json:"rule"`
	Message string `json:"message"`
}

// loadCRD reads one generated CRD and returns it with its only version.
func loadCRD(t *testing.T, file string) (*crd, *crdVersion) {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(crdDir, file))
	if err != nil {
		t.Fatalf("%v (run tools/generate.sh)", err)
	}
	var c crd
	if err := yaml.Unmarshal(data, &c); err != nil {
		t.Fatalf("%s: %v", file, err)
	}
	if len(c.Spec.Versions) != 1 {
		t.Fatalf("%s has %d versions, want 1 (v1alpha1)", file, len(c.Spec.Versions))
	}
	return &c, &c.Spec.Versions[0]
}

// field walks a schema along a dotted path in which "[]" steps into array
// items and "{}" into map values, e.g. "spec.destinations.[].cidr".
func field(t *testing.T, root *schemaNode, path string) *schemaNode {
	t.Helper()
	node := root
	for _, step := range strings.Split(path, ".") {
		switch {
		case node == nil:
		case step == "[]":
			node = node.Items
		case step == "{}":
			node = node.AdditionalProperties
		default:
			node = node.Properties[step]
		}
	}
	if node == nil {
		t.Fatalf("schema has no %s", path)
	}
	return node
}

// hasRule reports whether a schema node carries a CEL rule containing all of
// the given fragments, with a non-empty message.
func hasRule(node *schemaNode, fragments ...string) bool {
	for _, v := range node.Validations {
		if v.Message == "" {
			continue
		}
		if !slices.ContainsFunc(fragments, func(f string) bool { return !strings.Contains(v.Rule, f) }) {
			return true
		}
	}
	return false
}

// hasExactRule reports whether a schema node carries exactly this CEL rule,
// with a non-empty message. Guarded rules ("!isCIDR(self) || …") contain the
// unguarded text, so the check must be exact, not a substring.
func hasExactRule(node *schemaNode, rule string) bool {
	return slices.ContainsFunc(node.Validations, func(v celRule) bool {
		return v.Rule == rule && v.Message != ""
	})
}

const (
	policyCRD = "nsegress.io_egressnatpolicies.yaml"
	groupCRD  = "nsegress.io_networkgatewaygroups.yaml"
)

func TestCRDsAreNamedScopedAndServedAsTheSpecSays(t *testing.T) {
	tests := []struct {
		name      string
		file      string
		kind      string
		plural    string
		scope     string
		shortName string
	}{
		{name: "EgressNATPolicy is cluster-scoped with short name enp", file: policyCRD,
			kind: "EgressNATPolicy", plural: "egressnatpolicies", scope: "Cluster", shortName: "enp"},
		{name: "NetworkGatewayGroup is namespaced with short name ngg", file: groupCRD,
			kind: "NetworkGatewayGroup", plural: "networkgatewaygroups", scope: "Namespaced", shortName: "ngg"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, v := loadCRD(t, tt.file)
			if c.Kind != "CustomResourceDefinition" || c.Spec.Group != GroupName ||
				c.Spec.Names.Kind != tt.kind || c.Spec.Names.Plural != tt.plural {
				t.Errorf("CRD is %s of %s/%s (%s), want CustomResourceDefinition of %s/%s (%s)",
					c.Kind, c.Spec.Group, c.Spec.Names.Kind, c.Spec.Names.Plural, GroupName, tt.kind, tt.plural)
			}
			if c.Spec.Scope != tt.scope {
				t.Errorf("scope = %q, want %q", c.Spec.Scope, tt.scope)
			}
			if !slices.Contains(c.Spec.Names.ShortNames, tt.shortName) {
				t.Errorf("shortNames = %v, want %q among them", c.Spec.Names.ShortNames, tt.shortName)
			}
			if v.Name != SchemeGroupVersion.Version || !v.Served || !v.Storage {
				t.Errorf("version %q served=%v storage=%v, want %q served and stored", v.Name, v.Served, v.Storage, SchemeGroupVersion.Version)
			}
			if v.Subresources.Status == nil {
				t.Error("no status subresource: users could write status, and create would keep it")
			}
			if v.Schema.OpenAPIV3Schema == nil {
				t.Fatal("no OpenAPI schema")
			}
		})
	}
}

func TestCRDsPrintTheColumnsUsersLookFor(t *testing.T) {
	tests := []struct {
		name string
		file string
		// columns are the default (priority 0) columns, name → JSONPath.
		columns [][2]string
	}{
		{name: "policies show egress IP, gateway node, readiness and age", file: policyCRD, columns: [][2]string{
			{"Egress IP", ".status.egressIP"},
			{"Gateway Node", ".status.gatewayNode"},
			{"Ready", `.status.conditions[?(@.type=="Ready")].status`},
			{"Age", ".metadata.creationTimestamp"},
		}},
		{name: "groups show their floating IPs and age", file: groupCRD, columns: [][2]string{
			{"Floating IPs", ".spec.floatingIPs"},
			{"Age", ".metadata.creationTimestamp"},
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, v := loadCRD(t, tt.file)
			var got [][2]string
			for _, c := range v.AdditionalPrinterColumns {
				if c.Priority == 0 {
					got = append(got, [2]string{c.Name, c.JSONPath})
				}
			}
			if !slices.Equal(got, tt.columns) {
				t.Errorf("default printer columns = %q, want %q", got, tt.columns)
			}
		})
	}
}

func TestCRDSchemasValidateWhatTheAPIServerMustRefuse(t *testing.T) {
	const ipv4 = "isIP(self) && ip(self).family() == 4"
	tests := []struct {
		name  string
		file  string
		path  string
		check func(n *schemaNode) bool
	}{
		{name: "a policy spec needs sources, action, destinations and gatewayRef", file: policyCRD, path: "spec",
			check: func(n *schemaNode) bool {
				return slices.Equal(n.Required, []string{"action", "destinations", "gatewayRef", "sources"})
			}},
		{name: "a policy needs at least one source", file: policyCRD, path: "spec.sources",
			check: func(n *schemaNode) bool { return n.MinItems != nil && *n.MinItems == 1 && n.MaxItems != nil }},
		{name: "a source needs a namespace selector", file: policyCRD, path: "spec.sources.[]",
			check: func(n *schemaNode) bool { return slices.Equal(n.Required, []string{"namespaceSelector"}) }},
		{name: "SNAT is the only action", file: policyCRD, path: "spec.action",
			check: func(n *schemaNode) bool { return slices.Equal(n.Enum, []string{"SNAT"}) }},
		{name: "a policy needs at least one destination, each CIDR once", file: policyCRD, path: "spec.destinations",
			check: func(n *schemaNode) bool {
				return n.MinItems != nil && *n.MinItems == 1 && n.ListType == "map" && slices.Equal(n.ListMapKeys, []string{"cidr"})
			}},
		{name: "a destination needs a cidr", file: policyCRD, path: "spec.destinations.[]",
			check: func(n *schemaNode) bool { return slices.Equal(n.Required, []string{"cidr"}) }},
		{name: "a destination cidr must parse as a CIDR", file: policyCRD, path: "spec.destinations.[].cidr",
			check: func(n *schemaNode) bool { return hasExactRule(n, "isCIDR(self)") }},
		{name: "a destination cidr must be IPv4", file: policyCRD, path: "spec.destinations.[].cidr",
			check: func(n *schemaNode) bool { return hasRule(n, "cidr(self).ip().family() == 4") }},
		{name: "a destination cidr must have no host bits", file: policyCRD, path: "spec.destinations.[].cidr",
			check: func(n *schemaNode) bool { return hasRule(n, "cidr(self) == cidr(self).masked()") }},
		{name: "a destination cidr is not the whole address space", file: policyCRD, path: "spec.destinations.[].cidr",
			check: func(n *schemaNode) bool { return hasRule(n, "cidr(self).prefixLength() > 0") }},
		{name: "gatewayRef needs name and namespace", file: policyCRD, path: "spec.gatewayRef",
			check: func(n *schemaNode) bool { return slices.Equal(n.Required, []string{"name", "namespace"}) }},
		{name: "gatewayRef name is a DNS subdomain", file: policyCRD, path: "spec.gatewayRef.name",
			check: func(n *schemaNode) bool { return n.Pattern != "" && n.MinLength != nil && *n.MaxLength == 253 }},
		{name: "gatewayRef namespace is a DNS label", file: policyCRD, path: "spec.gatewayRef.namespace",
			check: func(n *schemaNode) bool { return n.Pattern != "" && n.MinLength != nil && *n.MaxLength == 63 }},
		{name: "a pinned egress IP must be an IPv4 address", file: policyCRD, path: "spec.egressIP",
			check: func(n *schemaNode) bool { return hasExactRule(n, ipv4) }},
		{name: "a pinned egress IP must be unicast", file: policyCRD, path: "spec.egressIP",
			check: func(n *schemaNode) bool { return hasRule(n, "isGlobalUnicast()") }},
		{name: "failMode is Closed or Open and defaults to Closed", file: policyCRD, path: "spec.failMode",
			check: func(n *schemaNode) bool {
				return slices.Equal(n.Enum, []string{"Closed", "Open"}) && n.Default == "Closed"
			}},
		{name: "policy conditions are a map keyed by type", file: policyCRD, path: "status.conditions",
			check: func(n *schemaNode) bool { return n.ListType == "map" && slices.Equal(n.ListMapKeys, []string{"type"}) }},
		{name: "a group spec needs floatingIPs", file: groupCRD, path: "spec",
			check: func(n *schemaNode) bool { return slices.Equal(n.Required, []string{"floatingIPs"}) }},
		{name: "a group needs at least one floating IP, each once", file: groupCRD, path: "spec.floatingIPs",
			check: func(n *schemaNode) bool { return n.MinItems != nil && *n.MinItems == 1 && n.ListType == "set" }},
		{name: "a floating IP must be an IPv4 address", file: groupCRD, path: "spec.floatingIPs.[]",
			check: func(n *schemaNode) bool { return hasExactRule(n, ipv4) }},
		{name: "a floating IP must be unicast", file: groupCRD, path: "spec.floatingIPs.[]",
			check: func(n *schemaNode) bool { return hasRule(n, "isGlobalUnicast()") }},
		{name: "a group's node selector is a label selector", file: groupCRD, path: "spec.nodeSelector.matchLabels",
			check: func(n *schemaNode) bool { return n.Type == "object" }},
		{name: "a gateway node is Up or Down", file: groupCRD, path: "status.nodes.{}",
			check: func(n *schemaNode) bool { return slices.Equal(n.Enum, []string{"Up", "Down"}) }},
		{name: "status maps floating IPs to node names", file: groupCRD, path: "status.floatingIPs.{}",
			check: func(n *schemaNode) bool { return n.Type == "string" }},
		{name: "an assignment always names its active, possibly empty, and its epoch", file: groupCRD, path: "status.assignments.{}",
			check: func(n *schemaNode) bool { return slices.Equal(n.Required, []string{"active", "epoch"}) }},
		{name: "an assignment's epoch is an integer that is never negative", file: groupCRD, path: "status.assignments.{}.epoch",
			check: func(n *schemaNode) bool {
				return n.Type == "integer" && n.Format == "int64" && n.Minimum != nil && *n.Minimum == 0
			}},
		{name: "an assignment's reason is a MoveReason", file: groupCRD, path: "status.assignments.{}.reason",
			check: func(n *schemaNode) bool {
				return slices.Equal(n.Enum, []string{"Placed", "PeerDead", "NodeDown", "Drained", "NodeDeleted", "NotInGroup",
					"Conflict", "PartitionHealed", "Manual"}) && !slices.ContainsFunc(n.Enum, func(r string) bool { return !MoveReason(r).Known() })
			}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, v := loadCRD(t, tt.file)
			n := field(t, v.Schema.OpenAPIV3Schema, tt.path)
			if !tt.check(n) {
				t.Errorf("%s: %s has %+v", tt.file, tt.path, *n)
			}
		})
	}
}

// TestEveryCELRuleHasABoundedInput guards the API server's CEL cost limit: a
// rule on a string of unbounded length, or inside a list of unbounded size,
// can make the server refuse the whole CRD.
func TestEveryCELRuleHasABoundedInput(t *testing.T) {
	for _, file := range []string{policyCRD, groupCRD} {
		t.Run(file, func(t *testing.T) {
			_, v := loadCRD(t, file)
			rules := 0
			var walk func(path string, n *schemaNode, bounded bool)
			walk = func(path string, n *schemaNode, bounded bool) {
				if n == nil {
					return
				}
				if len(n.Validations) > 0 {
					rules += len(n.Validations)
					if !bounded || (n.Type == "string" && n.MaxLength == nil) {
						t.Errorf("%s has CEL rules but no maxLength/maxItems bound on it or its lists", path)
					}
				}
				for name, p := range n.Properties {
					walk(path+"."+name, p, bounded)
				}
				walk(path+".[]", n.Items, bounded && n.MaxItems != nil)
				walk(path+".{}", n.AdditionalProperties, false)
			}
			walk("", v.Schema.OpenAPIV3Schema, true)
			if rules == 0 {
				t.Error("no CEL rules at all; IP and CIDR validation is missing")
			}
		})
	}
}

func TestKustomizationListsEveryCRD(t *testing.T) {
	data, err := os.ReadFile(filepath.Join(crdDir, "kustomization.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var k struct {
		Resources []string `json:"resources"`
	}
	if err := yaml.Unmarshal(data, &k); err != nil {
		t.Fatal(err)
	}
	files, err := filepath.Glob(filepath.Join(crdDir, GroupName+"_*.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var want []string
	for _, f := range files {
		want = append(want, filepath.Base(f))
	}
	if !slices.Equal(k.Resources, want) || !slices.Contains(want, policyCRD) || !slices.Contains(want, groupCRD) {
		t.Errorf("kustomization resources = %v, CRD files = %v", k.Resources, want)
	}
}
