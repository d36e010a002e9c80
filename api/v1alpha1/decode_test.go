package v1alpha1

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"os"
	"path/filepath"
	"testing"

	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"sigs.k8s.io/yaml"
)

// newTestScheme returns a scheme holding only this package's kinds.
func newTestScheme(t *testing.T) *runtime.Scheme {
	t.Helper()
	scheme := runtime.NewScheme()
	if err := AddToScheme(scheme); err != nil {
		t.Fatalf("AddToScheme: %v", err)
	}
	return scheme
}

// decodeFile strictly decodes every YAML document of a file into the Go
// type the scheme registers for its apiVersion and kind. Strict means an
// unknown or duplicated field fails the test, so the fixtures and the
// types cannot drift apart silently.
func decodeFile(t *testing.T, scheme *runtime.Scheme, path string) []runtime.Object {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	reader := utilyaml.NewYAMLReader(bufio.NewReader(bytes.NewReader(data)))
	var objs []runtime.Object
	for {
		doc, err := reader.Read()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatalf("%s: split YAML documents: %v", path, err)
		}
		if len(bytes.TrimSpace(doc)) == 0 {
			continue
		}
		objs = append(objs, decodeDocument(t, scheme, path, doc))
	}
	return objs
}

// decodeDocument decodes one YAML document; see decodeFile.
func decodeDocument(t *testing.T, scheme *runtime.Scheme, path string, doc []byte) runtime.Object {
	t.Helper()
	var meta struct {
		APIVersion string `json:"apiVersion"`
		Kind       string `json:"kind"`
	}
	if err := yaml.Unmarshal(doc, &meta); err != nil {
		t.Fatalf("%s: read apiVersion and kind: %v", path, err)
	}
	gv, err := schema.ParseGroupVersion(meta.APIVersion)
	if err != nil {
		t.Fatalf("%s: apiVersion %q: %v", path, meta.APIVersion, err)
	}
	obj, err := scheme.New(gv.WithKind(meta.Kind))
	if err != nil {
		t.Fatalf("%s: %s %s is not registered: %v", path, meta.APIVersion, meta.Kind, err)
	}
	if err := yaml.UnmarshalStrict(doc, obj); err != nil {
		t.Fatalf("%s: strict decode of %s: %v", path, meta.Kind, err)
	}
	return obj
}

func TestEveryFixtureDecodesStrictly(t *testing.T) {
	scheme := newTestScheme(t)
	paths, err := filepath.Glob(filepath.Join("testdata", "*.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	if len(paths) == 0 {
		t.Fatal("no fixtures in testdata")
	}
	for _, path := range paths {
		t.Run(filepath.Base(path), func(t *testing.T) {
			objs := decodeFile(t, scheme, path)
			if len(objs) == 0 {
				t.Fatalf("%s holds no objects", path)
			}
			for _, obj := range objs {
				if gv := obj.GetObjectKind().GroupVersionKind().GroupVersion(); gv != SchemeGroupVersion {
					t.Errorf("%s: apiVersion is %s, want %s", path, gv, SchemeGroupVersion)
				}
			}
		})
	}
}

func TestStrictDecodingRejectsWhatTheTypesDoNotKnow(t *testing.T) {
	tests := []struct {
		name string
		into runtime.Object
		doc  string
	}{
		{
			name: "a misspelled spec field is an error",
			into: &NetworkGatewayGroup{},
			doc: `apiVersion: nsegress.io/v1alpha1
kind: NetworkGatewayGroup
metadata: {name: g, namespace: n}
spec:
  floatingIP: [198.51.100.101]
`,
		},
		{
			name: "a field given twice is an error",
			into: &EgressNATPolicy{},
			doc: `apiVersion: nsegress.io/v1alpha1
kind: EgressNATPolicy
metadata: {name: p}
spec:
  action: SNAT
  action: SNAT
`,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if err := yaml.UnmarshalStrict([]byte(tt.doc), tt.into); err == nil {
				t.Errorf("strict decode accepted:\n%s", tt.doc)
			}
		})
	}
}
