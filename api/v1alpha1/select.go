package v1alpha1

import (
	"fmt"
	"sort"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
)

// Match is what a policy says about one pod.
type Match int

const (
	// NoMatch: the policy does not select the pod.
	NoMatch Match = iota
	// Selected: the policy selects the pod.
	Selected
	// NeedPodLabels: the pod's labels are unknown and the answer depends
	// on them (a source selects the namespace with a non-empty
	// podSelector).
	NeedPodLabels
)

// Matches says whether p selects a pod with podLabels in a namespace with
// nsLabels. podLabels nil means the pod's labels are unknown (the plugin's
// snapshot fallback): the answer is then Selected only when a source
// selects the namespace whatever the pod's labels, and NeedPodLabels when
// it depends on them. An invalid selector is an error naming the source.
func (p *EgressNATPolicy) Matches(nsLabels, podLabels map[string]string) (Match, error) {
	result := NoMatch
	for i := range p.Spec.Sources {
		src := &p.Spec.Sources[i]
		ns, err := metav1.LabelSelectorAsSelector(&src.NamespaceSelector)
		if err != nil {
			return NoMatch, fmt.Errorf("policy %s: sources[%d].namespaceSelector: %w", p.Name, i, err)
		}
		if !ns.Matches(labels.Set(nsLabels)) {
			continue
		}
		if src.PodSelector == nil {
			return Selected, nil
		}
		pod, err := metav1.LabelSelectorAsSelector(src.PodSelector)
		if err != nil {
			return NoMatch, fmt.Errorf("policy %s: sources[%d].podSelector: %w", p.Name, i, err)
		}
		switch {
		case pod.Empty():
			return Selected, nil
		case podLabels == nil:
			result = NeedPodLabels
		case pod.Matches(labels.Set(podLabels)):
			return Selected, nil
		}
	}
	return result, nil
}

// Older says whether a is older than b: by creation time, then by name,
// so that two policies created in the same second still have one order
// on every node.
func Older(a, b *EgressNATPolicy) bool {
	if !a.CreationTimestamp.Equal(&b.CreationTimestamp) {
		return a.CreationTimestamp.Before(&b.CreationTimestamp)
	}
	return a.Name < b.Name
}

// SortByAge orders policies oldest first (Older): the order in which they
// claim egress IPs and tunnel IDs, and in which they are asked whether
// they select a pod.
func SortByAge(policies []EgressNATPolicy) {
	sort.SliceStable(policies, func(i, j int) bool { return Older(&policies[i], &policies[j]) })
}

// SelectorError reports the first source whose namespaceSelector or
// podSelector is not a valid label selector, or nil. Such a policy selects
// no pod (SelectPolicy), and the elected controller reports it Ready=False
// with ReasonInvalidSelector.
func (p *EgressNATPolicy) SelectorError() error {
	for i := range p.Spec.Sources {
		src := &p.Spec.Sources[i]
		if _, err := metav1.LabelSelectorAsSelector(&src.NamespaceSelector); err != nil {
			return fmt.Errorf("policy %s: sources[%d].namespaceSelector: %w", p.Name, i, err)
		}
		if src.PodSelector == nil {
			continue
		}
		if _, err := metav1.LabelSelectorAsSelector(src.PodSelector); err != nil {
			return fmt.Errorf("policy %s: sources[%d].podSelector: %w", p.Name, i, err)
		}
	}
	return nil
}

// SelectPolicy returns the policy that governs a pod: of the policies that
// select it, the oldest (Older), so that every node and the plugin agree,
// and a newer policy cannot take over pods an older one already governs.
// It returns nil when none selects the pod. With podLabels nil (unknown),
// it fails with ErrNeedPodLabels when the oldest policy that may select
// the pod needs them to decide.
//
// A policy with an invalid selector (SelectorError) selects no pod: it is
// skipped whole, also where another of its sources is valid, so that the
// pods it governs do not depend on which of its sources happen to parse.
// It is not silent: the controller reports such a policy Ready=False with
// ReasonInvalidSelector. A policy the controller rejected (Rejected)
// selects no pod either.
func SelectPolicy(policies []EgressNATPolicy, nsLabels, podLabels map[string]string) (*EgressNATPolicy, error) {
	sorted := append([]EgressNATPolicy(nil), policies...)
	SortByAge(sorted)
	for i := range sorted {
		if sorted[i].SelectorError() != nil || sorted[i].Rejected() {
			continue // selects nothing; its status says why
		}
		m, err := sorted[i].Matches(nsLabels, podLabels)
		if err != nil {
			continue // unreachable: the selectors were checked just above
		}
		switch m {
		case Selected:
			p := sorted[i]
			return &p, nil
		case NeedPodLabels:
			return nil, fmt.Errorf("policy %s: %w", sorted[i].Name, ErrNeedPodLabels)
		}
	}
	return nil, nil
}

// ErrNeedPodLabels: whether a policy selects the pod depends on pod labels
// that are not known.
var ErrNeedPodLabels = fmt.Errorf("the pod's labels are needed to decide and are unknown")
