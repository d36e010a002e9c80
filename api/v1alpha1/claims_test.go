package v1alpha1

import (
	"maps"
	"strings"
	"testing"
)

func TestParseClaims(t *testing.T) {
	tests := []struct {
		name string
		in   string
		want map[string]Claim
		// err is a fragment the error must contain; "" means no error.
		err string
	}{
		{name: "an absent annotation is no claim", in: "", want: nil},
		{name: "an empty object is no claim", in: "{}", want: map[string]Claim{}},
		{name: "a claim without a reason parses",
			in: `{"198.51.100.11":{"epoch":3}}`, want: map[string]Claim{"198.51.100.11": {Epoch: 3}}},
		{name: "claims with reasons parse",
			in: `{"198.51.100.11":{"epoch":3,"reason":"PeerDead"},"198.51.100.12":{"epoch":9,"reason":"PartitionHealed"}}`,
			want: map[string]Claim{
				"198.51.100.11": {Epoch: 3, Reason: MovePeerDead},
				"198.51.100.12": {Epoch: 9, Reason: MovePartitionHealed},
			}},
		{name: "surrounding white space is allowed", in: " {\"198.51.100.11\": {\"epoch\": 1}}\n",
			want: map[string]Claim{"198.51.100.11": {Epoch: 1}}},
		{name: "text that is not JSON is refused", in: "198.51.100.11=3", err: "not a JSON object"},
		{name: "a JSON array is refused", in: `[{"epoch":1}]`, err: "not a JSON object"},
		{name: "JSON null is refused", in: "null", err: "null"},
		{name: "data after the object is refused", in: `{} {}`, err: "data after the JSON object"},
		{name: "an unknown field is refused", in: `{"198.51.100.11":{"epoch":1,"epohc":2}}`, err: "epohc"},
		{name: "an epoch that is not a number is refused", in: `{"198.51.100.11":{"epoch":"3"}}`, err: "not a JSON object"},
		{name: "an epoch beyond int64 is refused", in: `{"198.51.100.11":{"epoch":9223372036854775808}}`, err: "not a JSON object"},
		{name: "a zero epoch is refused", in: `{"198.51.100.11":{"epoch":0}}`, err: "epoch 0"},
		{name: "a missing epoch is refused", in: `{"198.51.100.11":{}}`, err: "epoch 0"},
		{name: "a negative epoch is refused", in: `{"198.51.100.11":{"epoch":-1}}`, err: "epoch -1"},
		{name: "an epoch above MaxEpoch is refused", in: `{"198.51.100.11":{"epoch":9007199254740993}}`, err: "epoch 9007199254740993"},
		{name: "an unknown reason is refused", in: `{"198.51.100.11":{"epoch":1,"reason":"Whim"}}`, err: `reason "Whim"`},
		{name: "a key that is a node name is refused", in: `{"gw-1":{"epoch":1}}`, err: `key "gw-1"`},
		{name: "an IPv6 key is refused", in: `{"2001:db8::1":{"epoch":1}}`, err: `key "2001:db8::1"`},
		{name: "an IPv4-mapped IPv6 key is refused", in: `{"::ffff:198.51.100.11":{"epoch":1}}`, err: "is not an IPv4 address"},
		{name: "a key with leading zeros is refused", in: `{"198.51.100.011":{"epoch":1}}`, err: `key "198.51.100.011"`},
		{name: "a CIDR key is refused", in: `{"198.51.100.11/32":{"epoch":1}}`, err: "is not an IPv4 address"},
		{name: "every problem is named", in: `{"gw-1":{"epoch":1},"198.51.100.11":{"epoch":0}}`, err: `key "gw-1"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseClaims(tt.in)
			if tt.err != "" {
				if err == nil || !strings.Contains(err.Error(), tt.err) || !strings.Contains(err.Error(), ClaimsAnnotation) {
					t.Fatalf("ParseClaims(%q) = %v, %v; want an error naming %s and containing %q", tt.in, got, err, ClaimsAnnotation, tt.err)
				}
				if got != nil {
					t.Errorf("ParseClaims(%q) returned claims %v with its error", tt.in, got)
				}
				return
			}
			if err != nil {
				t.Fatalf("ParseClaims(%q): %v", tt.in, err)
			}
			if !maps.Equal(got, tt.want) || (got == nil) != (tt.want == nil) {
				t.Errorf("ParseClaims(%q) = %#v, want %#v", tt.in, got, tt.want)
			}
		})
	}
	if _, err := ParseClaims(`{"gw-1":{"epoch":1},"198.51.100.11":{"epoch":0}}`); err == nil || !strings.Contains(err.Error(), "epoch 0") {
		t.Errorf("the error of two bad claims is %v; want both named", err)
	}
}

func TestFormatClaims(t *testing.T) {
	tests := []struct {
		name string
		in   map[string]Claim
		want string
	}{
		{"no claims is the empty string", nil, ""},
		{"an empty map is the empty string too", map[string]Claim{}, ""},
		{"a claim without a reason leaves it out", map[string]Claim{"198.51.100.11": {Epoch: 2}}, `{"198.51.100.11":{"epoch":2}}`},
		{"keys are sorted", map[string]Claim{
			"198.51.100.12": {Epoch: 1, Reason: MovePeerDead},
			"198.51.100.11": {Epoch: 5, Reason: MovePartitionHealed},
			"198.51.100.2":  {Epoch: 3},
		}, `{"198.51.100.11":{"epoch":5,"reason":"PartitionHealed"},"198.51.100.12":{"epoch":1,"reason":"PeerDead"},"198.51.100.2":{"epoch":3}}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := FormatClaims(tt.in)
			if got != tt.want {
				t.Errorf("FormatClaims = %s, want %s", got, tt.want)
			}
			back, err := ParseClaims(got)
			if err != nil || !maps.Equal(back, tt.in) {
				t.Errorf("ParseClaims(FormatClaims(c)) = %v, %v; want c = %v", back, err, tt.in)
			}
		})
	}
}

func TestEveryMoveReasonIsKnown(t *testing.T) {
	for _, r := range []MoveReason{MovePlaced, MovePeerDead, MoveNodeDown, MoveDrained, MoveNodeDeleted,
		MoveNotInGroup, MoveConflict, MovePartitionHealed, MoveManual} {
		if !r.Known() {
			t.Errorf("%s is not Known", r)
		}
	}
	for _, r := range []MoveReason{"", "placed", "Whim"} {
		if r.Known() {
			t.Errorf("%q is Known", r)
		}
	}
}

// FuzzParseClaims: whatever an agent (or a person with kubectl annotate)
// writes, ParseClaims does not panic, and what it accepts formats to text
// that parses back to the same claims.
func FuzzParseClaims(f *testing.F) {
	for _, s := range []string{
		"",
		"{}",
		"null",
		`{"198.51.100.11":{"epoch":3}}`,
		`{"198.51.100.11":{"epoch":3,"reason":"PeerDead"},"198.51.100.12":{"epoch":1}}`,
		`{"198.51.100.011":{"epoch":1}}`,
		`{"::ffff:198.51.100.11":{"epoch":1}}`,
		`{"198.51.100.11":{"epoch":9007199254740993}}`,
		`{"198.51.100.11":{"epoch":1,"EPOCH":2}}`,
		`[1,2]`,
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		c, err := ParseClaims(s)
		if err != nil {
			if c != nil {
				t.Fatalf("ParseClaims(%q) returned claims with an error", s)
			}
			return
		}
		for ip, claim := range c {
			if claim.Epoch <= 0 || claim.Epoch > MaxEpoch {
				t.Fatalf("ParseClaims(%q) accepted epoch %d for %s", s, claim.Epoch, ip)
			}
			if claim.Reason != "" && !claim.Reason.Known() {
				t.Fatalf("ParseClaims(%q) accepted reason %q", s, claim.Reason)
			}
		}
		text := FormatClaims(c)
		back, err := ParseClaims(text)
		if err != nil {
			t.Fatalf("ParseClaims(FormatClaims(ParseClaims(%q))) = %v", s, err)
		}
		if !maps.Equal(back, c) {
			t.Fatalf("round trip of %q: %v, then %v", s, c, back)
		}
		if FormatClaims(back) != text {
			t.Fatalf("FormatClaims is not stable for %q", s)
		}
	})
}
