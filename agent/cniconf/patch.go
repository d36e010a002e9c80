package cniconf

import (
	"bytes"
	"encoding/json"
	"fmt"
	"path/filepath"
	"slices"
	"strings"

	"github.com/containernetworking/cni/libcni"

	"github.com/nsegress/nsegress/nodestate"
)

// Patch returns the file that makes the runtime run nsegress after the
// primary's plugins: name is the primary's file (a path or a base name; it
// appears in errors) and data its bytes. For a .conflist the result goes
// back to the same name. A single-plugin .conf or .json is upconverted and
// the result must be written as outName, which ends in .conflist: runtimes
// load .conf and .json files as one plugin, so a list cannot go there.
//
// Any nsegress entry already in the list is replaced, wherever it stands,
// and ours goes last, after the primary's own plugins. Patch is
// idempotent: Patch of its own output gives the same bytes.
func Patch(name string, data []byte, e nodestate.Entry) (outName string, out []byte, err error) {
	if err := e.Validate(); err != nil {
		return "", nil, err
	}
	list := data
	outName = name
	switch ext := filepath.Ext(name); ext {
	case ".conflist":
	case ".conf", ".json":
		if list, err = upconvert(name, data); err != nil {
			return "", nil, err
		}
		outName = strings.TrimSuffix(name, ext) + ".conflist"
	default:
		return "", nil, fmt.Errorf("%s: not a CNI config file name: runtimes load only .conflist, .conf and .json", name)
	}
	list, _, err = removeOurs(name, list)
	if err != nil {
		return "", nil, err
	}
	d, err := parseList(name, list)
	if err != nil {
		return "", nil, err
	}
	out, err = d.insert(e)
	if err != nil {
		return "", nil, err
	}
	return outName, out, nil
}

// Unpatch removes every nsegress entry from the conflist data and reports
// how many it removed. Each entry goes with the separator before it, so
// Unpatch undoes Patch byte for byte, and a file without an entry comes
// back unchanged. A list that holds nothing but nsegress is an error:
// emptied, it would be a config no runtime loads.
func Unpatch(name string, data []byte) (out []byte, removed int, err error) {
	return removeOurs(name, data)
}

// Chained reports whether a conflist holds nsegress's entry after at least
// one plugin of the primary's: what "nsegress is chained" means.
func Chained(data []byte) bool {
	_, removed, err := removeOurs("chained.conflist", data)
	return err == nil && removed > 0
}

// listDoc is a conflist's text and the places in it that Patch needs.
type listDoc struct {
	b []byte
	// pluginsKey is the offset of the "plugins" key that counts: the last
	// one, as encoding/json (and so libcni) keeps the last duplicate.
	pluginsKey int
	elems      []span
	types      []string
}

// parseList checks data the way the runtime's libcni does and finds the
// plugins list. The checks of our own come first because their messages
// name the field: "conflist F: plugins is not a list".
func parseList(name string, b []byte) (*listDoc, error) {
	errf := func(format string, a ...any) error {
		return fmt.Errorf("conflist %s: "+format, append([]any{name}, a...)...)
	}
	var v any
	if err := json.Unmarshal(b, &v); err != nil {
		return nil, errf("not valid JSON: %v", err)
	}
	if _, ok := v.(map[string]any); !ok {
		return nil, errf("top level is not an object")
	}
	ms, err := objectMembers(b, skipSpace(b, 0))
	if err != nil {
		return nil, errf("%v", err)
	}
	var plugins *member
	for i := range ms {
		if ms[i].key == "plugins" {
			plugins = &ms[i]
		}
	}
	if plugins == nil {
		// libcni would also take plugins from <dir>/<name>/*.conf; those
		// run after the inline ones, so nsegress could not be last.
		return nil, errf("plugins is missing")
	}
	if b[plugins.val.start] != '[' {
		return nil, errf("plugins is not a list")
	}
	elems, err := arrayElems(b, plugins.val.start)
	if err != nil {
		return nil, errf("plugins: %v", err)
	}
	if len(elems) == 0 {
		return nil, errf("plugins is empty")
	}
	types := make([]string, len(elems))
	for i, e := range elems {
		if b[e.start] != '{' {
			return nil, errf("plugins[%d] is not an object", i)
		}
		// Decoded into a struct as libcni does, so "Type" counts as
		// "type" here exactly when it does for the runtime.
		var p struct {
			Type string `json:"type"`
		}
		if err := json.Unmarshal(b[e.start:e.end], &p); err != nil {
			return nil, errf("plugins[%d]: %v", i, err)
		}
		if p.Type == "" {
			return nil, errf("plugins[%d] has no type", i)
		}
		types[i] = p.Type
	}
	if _, err := libcni.ConfListFromBytes(b); err != nil {
		return nil, errf("%v", err)
	}
	return &listDoc{b: b, pluginsKey: plugins.keyStart, elems: elems, types: types}, nil
}

// removeOurs cuts nsegress entries out of a conflist one at a time,
// re-scanning after each cut so that offsets stay right.
func removeOurs(name string, b []byte) ([]byte, int, error) {
	removed := 0
	for {
		d, err := parseList(name, b)
		if err != nil {
			return nil, 0, err
		}
		i := slices.Index(d.types, nodestate.PluginType)
		if i < 0 {
			return b, removed, nil
		}
		if len(d.elems) == 1 {
			return nil, 0, fmt.Errorf("conflist %s: plugins holds nothing but %s", name, nodestate.PluginType)
		}
		// Cut from the end of the element before, which takes exactly
		// what insert added (",", line break, indentation, entry); the
		// first element goes with the separator after it instead.
		cut := span{d.elems[0].start, d.elems[1].start}
		if i > 0 {
			cut = span{d.elems[i-1].end, d.elems[i].end}
		}
		b = splice(b, cut, nil)
		removed++
	}
}

// insert adds the entry after the last plugin, laid out like that plugin:
// on its own line with the same indentation and line ending when the list
// is written one element per line, inline otherwise.
func (d *listDoc) insert(e nodestate.Entry) ([]byte, error) {
	last := d.elems[len(d.elems)-1]
	sep, prefix, nl, multiline := layoutBefore(d.b, last.start)
	unit := ""
	if multiline {
		unit = indentUnit(d.b, d.pluginsKey, prefix)
	}
	obj, err := encodeEntry(e, prefix, unit, nl)
	if err != nil {
		return nil, err
	}
	add := make([]byte, 0, 1+len(sep)+len(obj))
	add = append(add, ',')
	add = append(add, sep...)
	add = append(add, obj...)
	return splice(d.b, span{last.end, last.end}, add), nil
}

// layoutBefore looks at the text before the element at start. When the
// element begins its own line, sep is the line break and indentation to
// put before a new element; otherwise sep repeats the spaces between the
// separator and the element.
func layoutBefore(b []byte, start int) (sep, prefix, nl string, multiline bool) {
	j := start
	for j > 0 && (b[j-1] == ' ' || b[j-1] == '\t') {
		j--
	}
	if j > 0 && b[j-1] == '\n' {
		nl = "\n"
		if j > 1 && b[j-2] == '\r' {
			nl = "\r\n"
		}
		prefix = string(b[j:start])
		return nl + prefix, prefix, nl, true
	}
	return string(b[j:start]), "", "", false
}

// indentUnit guesses one level of the file's indentation from the plugins
// key's indentation and the elements' (Calico: 2 and 4 spaces, kindnet:
// tabs), so that the entry's fields sit one level deeper than its braces.
func indentUnit(b []byte, keyStart int, elemIndent string) string {
	if strings.Contains(elemIndent, "\t") {
		return "\t"
	}
	j := keyStart
	for j > 0 && (b[j-1] == ' ' || b[j-1] == '\t') {
		j--
	}
	if j == 0 || b[j-1] == '\n' {
		keyIndent := string(b[j:keyStart])
		if len(elemIndent) > len(keyIndent) && strings.HasPrefix(elemIndent, keyIndent) {
			return elemIndent[len(keyIndent):]
		}
	}
	return "  "
}

// upconvert turns a single-plugin config into the conflist that libcni's
// ConfListFromConf makes of it for the runtime: the list takes its name
// and cniVersion from the plugin, and the plugin object, keys in the
// original order, is the only element. The layout follows the original's
// line endings and indentation.
func upconvert(name string, b []byte) ([]byte, error) {
	var v any
	if err := json.Unmarshal(b, &v); err != nil {
		return nil, fmt.Errorf("conf %s: not valid JSON: %w", name, err)
	}
	if _, ok := v.(map[string]any); !ok {
		return nil, fmt.Errorf("conf %s: top level is not an object", name)
	}
	pc, err := libcni.NetworkPluginConfFromBytes(b)
	if err != nil {
		return nil, fmt.Errorf("conf %s: %w", name, err)
	}
	nl := "\n"
	if bytes.Contains(b, []byte("\r\n")) {
		nl = "\r\n"
	}
	unit := fileIndentUnit(b)
	var flat, obj bytes.Buffer
	if err := json.Compact(&flat, bytes.TrimSpace(b)); err != nil {
		return nil, fmt.Errorf("conf %s: %w", name, err)
	}
	if err := json.Indent(&obj, flat.Bytes(), unit+unit, unit); err != nil {
		return nil, fmt.Errorf("conf %s: %w", name, err)
	}
	var out strings.Builder
	out.WriteString("{" + nl)
	out.WriteString(unit + `"cniVersion": ` + jsonString(pc.Network.CNIVersion) + "," + nl)
	out.WriteString(unit + `"name": ` + jsonString(pc.Network.Name) + "," + nl)
	out.WriteString(unit + `"plugins": [` + nl)
	out.WriteString(unit + unit + strings.ReplaceAll(obj.String(), "\n", nl) + nl)
	out.WriteString(unit + "]" + nl)
	out.WriteString("}" + nl)
	return []byte(out.String()), nil
}

// fileIndentUnit is the indentation of the first indented line of b, or two
// spaces for a file written on one line.
func fileIndentUnit(b []byte) string {
	for i := 0; i < len(b); i++ {
		if b[i] != '\n' {
			continue
		}
		j := i + 1
		for j < len(b) && (b[j] == ' ' || b[j] == '\t') {
			j++
		}
		if j > i+1 && j < len(b) && !isSpace(b[j]) {
			if bytes.IndexByte(b[i+1:j], '\t') >= 0 {
				return "\t"
			}
			if j-(i+1) > 8 {
				break
			}
			return string(b[i+1 : j])
		}
	}
	return "  "
}

func jsonString(s string) string {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	_ = enc.Encode(s) // a string always encodes
	return strings.TrimSuffix(buf.String(), "\n")
}

func splice(b []byte, cut span, add []byte) []byte {
	out := make([]byte, 0, len(b)-(cut.end-cut.start)+len(add))
	out = append(out, b[:cut.start]...)
	out = append(out, add...)
	return append(out, b[cut.end:]...)
}
