package controller

import (
	"fmt"
	"sort"

	"github.com/nsegress/nsegress/api/v1alpha1"
)

// Pod is what the controller knows of a pod: where it is and its labels,
// all that decides which policies select it.
type Pod struct {
	Namespace, Name string
	Labels          map[string]string
}

// shadowing says where an older policy governs pods that a policy selects.
type shadowing struct {
	// by is the older policy that governs them.
	by string
	// where names the pod, or for a whole namespace the namespace.
	where string
}

// shadowed finds, for each policy, the first place where an older policy
// governs pods it selects: there only the older policy applies, so this
// policy's destinations that the older one does not cover leave without
// this policy's egress IP. A namespace that an older policy selects
// whatever its pods' labels shadows every newer policy that may select pods
// in it, also before any pod runs there; otherwise running pods decide.
// policies are oldest first; policies with an invalid selector select
// nothing and shadow nothing.
func shadowed(policies []*v1alpha1.EgressNATPolicy, namespaces map[string]map[string]string, pods []Pod) map[string]shadowing {
	valid := make([]*v1alpha1.EgressNATPolicy, 0, len(policies))
	for _, p := range policies {
		if p.SelectorError() == nil {
			valid = append(valid, p)
		}
	}
	out := map[string]shadowing{}
	note := func(newer *v1alpha1.EgressNATPolicy, s shadowing) {
		if _, ok := out[newer.Name]; !ok {
			out[newer.Name] = s
		}
	}
	names := make([]string, 0, len(namespaces))
	for ns := range namespaces {
		names = append(names, ns)
	}
	sort.Strings(names)
	for _, ns := range names {
		var whole *v1alpha1.EgressNATPolicy
		for _, p := range valid {
			m, _ := p.Matches(namespaces[ns], nil) // the selectors are valid
			switch {
			case m == v1alpha1.NoMatch:
			case whole != nil:
				note(p, shadowing{by: whole.Name, where: "namespace " + ns})
			case m == v1alpha1.Selected:
				whole = p
			}
		}
	}
	sorted := append([]Pod(nil), pods...)
	sort.Slice(sorted, func(i, j int) bool {
		if sorted[i].Namespace != sorted[j].Namespace {
			return sorted[i].Namespace < sorted[j].Namespace
		}
		return sorted[i].Name < sorted[j].Name
	})
	for _, pod := range sorted {
		nsLabels, ok := namespaces[pod.Namespace]
		if !ok {
			continue
		}
		labels := pod.Labels
		if labels == nil {
			labels = map[string]string{}
		}
		var governing *v1alpha1.EgressNATPolicy
		for _, p := range valid {
			if m, _ := p.Matches(nsLabels, labels); m != v1alpha1.Selected {
				continue
			}
			if governing == nil {
				governing = p
				continue
			}
			note(p, shadowing{by: governing.Name, where: "pod " + pod.Namespace + "/" + pod.Name})
		}
	}
	return out
}

// message explains a shadowing in the policy's Ready condition.
func (s shadowing) message() string {
	return fmt.Sprintf("the older EgressNATPolicy %s governs pods this policy selects (%s): when several policies select a pod, only the oldest applies, so this policy's destinations that %[1]s does not cover leave those pods without this policy's egress IP; narrow the selectors so that no pod is selected twice, or merge the policies", s.by, s.where)
}
