package cniconf

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strings"

	"github.com/nsegress/nsegress/nodestate"
)

// encodeEntry marshals nsegress's entry for a place in a file: indented
// with prefix and unit when unit is not empty (compact otherwise), with nl
// as line ending. HTML escaping is off, so paths read as written.
func encodeEntry(e nodestate.Entry, prefix, unit, nl string) ([]byte, error) {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if unit != "" {
		enc.SetIndent(prefix, unit)
	}
	if err := enc.Encode(e); err != nil {
		return nil, fmt.Errorf("nsegress entry: %w", err)
	}
	out := bytes.TrimSuffix(buf.Bytes(), []byte("\n"))
	if nl != "" && nl != "\n" {
		// JSON strings cannot hold a raw newline, so every '\n' here is
		// one the encoder put between tokens.
		out = []byte(strings.ReplaceAll(string(out), "\n", nl))
	}
	return out, nil
}
