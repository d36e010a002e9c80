package cniconf

import (
	"encoding/json"
	"errors"
)

// This file is a small scanner over JSON text that json.Valid has already
// accepted. It only finds where values start and end, so that Patch can
// splice bytes into the primary's file instead of re-encoding it: a
// re-encoded file would lose its key order, spacing and escapes, and
// uninstall could not give the primary its file back byte for byte. The
// bounds checks are there because the fuzz target feeds it anything.

// errScan means the text is not the JSON the scanner was promised.
var errScan = errors.New("malformed JSON")

// span is the half-open byte range [start, end) of one value.
type span struct{ start, end int }

// member is one "key": value pair of an object.
type member struct {
	keyStart int
	key      string
	val      span
}

func isSpace(c byte) bool { return c == ' ' || c == '\t' || c == '\n' || c == '\r' }

func skipSpace(b []byte, i int) int {
	for i < len(b) && isSpace(b[i]) {
		i++
	}
	return i
}

// stringEnd returns the index just past the string that starts at b[i].
func stringEnd(b []byte, i int) (int, error) {
	if i >= len(b) || b[i] != '"' {
		return 0, errScan
	}
	for j := i + 1; j < len(b); j++ {
		switch b[j] {
		case '\\':
			j++
		case '"':
			return j + 1, nil
		}
	}
	return 0, errScan
}

// valueEnd returns the index just past the value that starts at b[i].
func valueEnd(b []byte, i int) (int, error) {
	if i >= len(b) {
		return 0, errScan
	}
	switch b[i] {
	case '"':
		return stringEnd(b, i)
	case '{', '[':
		depth := 0
		for j := i; j < len(b); j++ {
			switch b[j] {
			case '"':
				e, err := stringEnd(b, j)
				if err != nil {
					return 0, err
				}
				j = e - 1
			case '{', '[':
				depth++
			case '}', ']':
				depth--
				if depth == 0 {
					return j + 1, nil
				}
			}
		}
		return 0, errScan
	default:
		j := i
		for j < len(b) && !isSpace(b[j]) && b[j] != ',' && b[j] != '}' && b[j] != ']' {
			j++
		}
		if j == i {
			return 0, errScan
		}
		return j, nil
	}
}

// objectMembers lists the members of the object that starts at b[i], in
// the order written, duplicates included.
func objectMembers(b []byte, i int) ([]member, error) {
	if i >= len(b) || b[i] != '{' {
		return nil, errScan
	}
	j := skipSpace(b, i+1)
	if j < len(b) && b[j] == '}' {
		return nil, nil
	}
	var ms []member
	for {
		ke, err := stringEnd(b, j)
		if err != nil {
			return nil, err
		}
		var key string
		// Decoding the key as encoding/json does resolves escapes, so
		// "plugin\u0073" is "plugins" here as it is for libcni.
		if err := json.Unmarshal(b[j:ke], &key); err != nil {
			return nil, errScan
		}
		c := skipSpace(b, ke)
		if c >= len(b) || b[c] != ':' {
			return nil, errScan
		}
		vs := skipSpace(b, c+1)
		ve, err := valueEnd(b, vs)
		if err != nil {
			return nil, err
		}
		ms = append(ms, member{keyStart: j, key: key, val: span{vs, ve}})
		j = skipSpace(b, ve)
		if j >= len(b) {
			return nil, errScan
		}
		switch b[j] {
		case '}':
			return ms, nil
		case ',':
			j = skipSpace(b, j+1)
		default:
			return nil, errScan
		}
	}
}

// arrayElems lists the elements of the array that starts at b[i].
func arrayElems(b []byte, i int) ([]span, error) {
	if i >= len(b) || b[i] != '[' {
		return nil, errScan
	}
	j := skipSpace(b, i+1)
	if j < len(b) && b[j] == ']' {
		return nil, nil
	}
	var es []span
	for {
		e, err := valueEnd(b, j)
		if err != nil {
			return nil, err
		}
		es = append(es, span{j, e})
		j = skipSpace(b, e)
		if j >= len(b) {
			return nil, errScan
		}
		switch b[j] {
		case ']':
			return es, nil
		case ',':
			j = skipSpace(b, j+1)
		default:
			return nil, errScan
		}
	}
}
