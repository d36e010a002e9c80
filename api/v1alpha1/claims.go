package v1alpha1

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"net/netip"
	"slices"
	"strings"
)

// ClaimsAnnotation is the annotation on a Node in which the node's agent
// records the floating IPs it took over on its own (JSON object: floating
// IP -> Claim), e.g.
//
//	{"198.51.100.11":{"epoch":3,"reason":"PeerDead"}}
//
// The elected controller adopts a claim whose epoch is higher than the
// IP's status.assignments epoch when the claiming node is Up in the group
// (docs/design.md §3).
const ClaimsAnnotation = "nsegress.io/floating-ip-claims"

// MaxEpoch is the highest epoch a claim may carry: 2^53, the largest
// integer that every JSON reader (kubectl's included) reads exactly, and
// far from where adding one overflows an int64.
const MaxEpoch int64 = 1 << 53

// Claim is one floating IP a node took over: the epoch it took it with and
// why.
type Claim struct {
	// Epoch is higher than any epoch the node knew for the IP.
	Epoch int64 `json:"epoch"`
	// Reason is why the node took the IP; empty means MovePeerDead.
	Reason MoveReason `json:"reason,omitempty"`
}

// ParseClaims reads the value of ClaimsAnnotation. An empty value is no
// claim (nil, nil). Anything else must be a JSON object whose keys are
// IPv4 addresses in dotted-quad form and whose values have a positive
// epoch (1..MaxEpoch) and, if any, a known reason; unknown fields are an
// error, so that a typo is not read as a claim without a reason. The
// error names every problem found.
func ParseClaims(s string) (map[string]Claim, error) {
	if s == "" {
		return nil, nil
	}
	dec := json.NewDecoder(strings.NewReader(s))
	dec.DisallowUnknownFields()
	var raw map[string]Claim
	if err := dec.Decode(&raw); err != nil {
		return nil, fmt.Errorf("annotation %s: not a JSON object of floating IP to claim: %w", ClaimsAnnotation, err)
	}
	if dec.More() {
		return nil, fmt.Errorf("annotation %s: data after the JSON object", ClaimsAnnotation)
	}
	if raw == nil { // the JSON value null
		return nil, fmt.Errorf("annotation %s: null, want a JSON object", ClaimsAnnotation)
	}
	var errs []error
	for _, ip := range slices.Sorted(maps.Keys(raw)) {
		c := raw[ip]
		// ParseAddr takes IPv4 only in dotted-quad form; String gives
		// it back the same only when it is canonical (no leading zeros).
		if a, err := netip.ParseAddr(ip); err != nil || !a.Is4() || a.String() != ip {
			errs = append(errs, fmt.Errorf("annotation %s: key %q is not an IPv4 address such as 198.51.100.11", ClaimsAnnotation, ip))
			continue
		}
		if c.Epoch <= 0 || c.Epoch > MaxEpoch {
			errs = append(errs, fmt.Errorf("annotation %s: claim of %s has epoch %d, want 1..%d", ClaimsAnnotation, ip, c.Epoch, MaxEpoch))
		}
		// The controller copies the reason into the group's status,
		// whose schema admits only the enum: an unknown one would make
		// every status write of the group fail.
		if c.Reason != "" && !c.Reason.Known() {
			errs = append(errs, fmt.Errorf("annotation %s: claim of %s has reason %q, not a MoveReason", ClaimsAnnotation, ip, c.Reason))
		}
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	return raw, nil
}

// FormatClaims is the value of ClaimsAnnotation for c: a JSON object with
// its keys sorted, so that the same claims always give the same text and
// rewriting the annotation with it changes nothing. No claim is "".
func FormatClaims(c map[string]Claim) string {
	if len(c) == 0 {
		return ""
	}
	// encoding/json sorts map keys; Claim has only plain fields, so
	// Marshal cannot fail.
	b, err := json.Marshal(c)
	if err != nil {
		panic(fmt.Sprintf("format claims: %v", err))
	}
	return string(bytes.TrimSpace(b))
}

// Known says whether r is one of the MoveReason values the CRD admits.
func (r MoveReason) Known() bool {
	switch r {
	case MovePlaced, MovePeerDead, MoveNodeDown, MoveDrained, MoveNodeDeleted,
		MoveNotInGroup, MoveConflict, MovePartitionHealed, MoveManual:
		return true
	}
	return false
}
