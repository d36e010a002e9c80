package controller

import (
	"fmt"
	"strings"

	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/nsegress/nsegress/api/v1alpha1"
)

// reasonNoFreeTunnelID is the API's reason for a policy that found every
// tunnel ID taken.
const reasonNoFreeTunnelID = v1alpha1.ReasonNoFreeTunnelID

// ipClaims tracks egress IPs while policies are decided oldest first.
type ipClaims struct {
	// taken maps an egress IP to the policy already given it.
	taken map[string]string
	// wanted maps an IP to the policies not decided yet that pin it or
	// hold it now; a policy choosing a new IP avoids these when it can,
	// so that it does not take an IP that a newer policy would keep.
	wanted map[string]map[string]bool
}

func newIPClaims(policies []*v1alpha1.EgressNATPolicy) *ipClaims {
	c := &ipClaims{taken: map[string]string{}, wanted: map[string]map[string]bool{}}
	for _, p := range policies {
		if ip := wantedIP(p); ip != "" {
			if c.wanted[ip] == nil {
				c.wanted[ip] = map[string]bool{}
			}
			c.wanted[ip][p.Name] = true
		}
	}
	return c
}

// wantedIP is the IP a policy asks for (spec) or would keep (status).
func wantedIP(p *v1alpha1.EgressNATPolicy) string {
	if p.Spec.EgressIP != "" {
		return p.Spec.EgressIP
	}
	return p.Status.EgressIP
}

// decided marks a policy as decided: it no longer reserves what it wanted.
func (c *ipClaims) decided(p *v1alpha1.EgressNATPolicy) {
	if ip := wantedIP(p); ip != "" {
		delete(c.wanted[ip], p.Name)
	}
}

// verdict is what was decided for one policy.
type verdict struct {
	egressIP, gatewayNode string
	reason, message       string
}

// policyStatus decides one policy's status. Its tunnel ID was decided
// before; its egress IP is claimed in claims.
func policyStatus(p *v1alpha1.EgressNATPolicy, groups map[types.NamespacedName]*placement, claims *ipClaims, tunnelID int32, shadow *shadowing, ranges []ClusterRange, now metav1.Time) v1alpha1.EgressNATPolicyStatus {
	v := decide(p, groups, claims)
	claims.decided(p)
	if err := p.SelectorError(); err != nil {
		v.reason = v1alpha1.ReasonInvalidSelector
		v.message = fmt.Sprintf("%v: the policy selects no pod until the selector is fixed", err)
	} else if why, covers := coveredRange(p, ranges); covers {
		v.reason = v1alpha1.ReasonDestinationCoversCluster
		v.message = why + ": the selected pods' traffic to the cluster itself would leave through a gateway; name only the networks behind the firewall"
	} else if tunnelID == 0 {
		v.reason = reasonNoFreeTunnelID
		v.message = fmt.Sprintf("all tunnel IDs 1..%d are used by older policies; delete unused policies; %s", maxTunnelID, failModeEffect(p))
	} else if shadow != nil && v.reason == v1alpha1.ReasonEgressReady {
		// It may hold its egress IP, but it cannot govern all it selects.
		v.reason = v1alpha1.ReasonShadowedByOlderPolicy
		v.message = shadow.message()
	}

	st := v1alpha1.EgressNATPolicyStatus{
		EgressIP:    v.egressIP,
		GatewayNode: v.gatewayNode,
		TunnelID:    tunnelID,
	}
	// Other condition types are kept as they are: Assign owns Ready only.
	if len(p.Status.Conditions) > 0 {
		st.Conditions = append([]metav1.Condition(nil), p.Status.Conditions...)
	}
	cond := metav1.Condition{
		Type:               v1alpha1.ConditionReady,
		Status:             metav1.ConditionFalse,
		ObservedGeneration: p.Generation,
		LastTransitionTime: now,
		Reason:             v.reason,
		Message:            v.message,
	}
	if v.reason == v1alpha1.ReasonEgressReady {
		cond.Status = metav1.ConditionTrue
	}
	// SetStatusCondition keeps LastTransitionTime when the status stays.
	meta.SetStatusCondition(&st.Conditions, cond)
	return st
}

// decide picks the policy's egress IP and gateway node, or says why not.
func decide(p *v1alpha1.EgressNATPolicy, groups map[types.NamespacedName]*placement, claims *ipClaims) verdict {
	ref := p.Spec.GatewayRef
	g := groups[types.NamespacedName{Namespace: ref.Namespace, Name: ref.Name}]
	if g == nil {
		return verdict{
			reason: v1alpha1.ReasonGatewayGroupNotFound,
			message: fmt.Sprintf("spec.gatewayRef names NetworkGatewayGroup %s/%s, which does not exist: create it or fix gatewayRef; %s",
				ref.Namespace, ref.Name, failModeEffect(p)),
		}
	}
	ip, refusal := pickIP(p, g, claims)
	if ip == "" {
		return refusal
	}
	claims.taken[ip] = p.Name
	if why := g.conflicts[ip]; why != "" {
		return verdict{
			egressIP: ip,
			reason:   v1alpha1.ReasonFloatingIPConflict,
			message:  fmt.Sprintf("egress IP %s is held by no node: %s; fix the groups' floatingIPs; %s", ip, why, failModeEffect(p)),
		}
	}

	node := g.status.FloatingIPs[ip]
	if node == "" {
		// Keep the IP: it is still this policy's, and comes back with
		// the first node that is Up.
		return verdict{
			egressIP: ip,
			reason:   v1alpha1.ReasonNoGatewayNodeUp,
			message:  fmt.Sprintf("no node is Up to hold egress IP %s: %s; %s", ip, g.whyNoNodeUp(), failModeEffect(p)),
		}
	}
	return verdict{
		egressIP:    ip,
		gatewayNode: node,
		reason:      v1alpha1.ReasonEgressReady,
		message:     fmt.Sprintf("egress IP %s held by %s", ip, node),
	}
}

// pickIP chooses the policy's egress IP in group g: the pinned one, else
// the one it has, else a free one. It returns "" and the reason when there
// is none.
func pickIP(p *v1alpha1.EgressNATPolicy, g *placement, claims *ipClaims) (string, verdict) {
	if pin := p.Spec.EgressIP; pin != "" {
		if !g.floating[pin] {
			return "", verdict{
				reason: v1alpha1.ReasonEgressIPNotInGroup,
				message: fmt.Sprintf("spec.egressIP %s is not a floating IP of NetworkGatewayGroup %s (%s): pin one of those or add it to the group's floatingIPs; %s",
					pin, g.name(), strings.Join(g.group.Spec.FloatingIPs, ", "), failModeEffect(p)),
			}
		}
		if owner := claims.taken[pin]; owner != "" {
			// Sharing an egress IP would let one policy's traffic pass
			// a firewall as the other's (docs/design.md §5, no borrowing).
			return "", verdict{
				reason: v1alpha1.ReasonEgressIPInUse,
				message: fmt.Sprintf("spec.egressIP %s is already the egress IP of the older EgressNATPolicy %s: pin another floating IP of NetworkGatewayGroup %s or remove egressIP to get a free one; %s",
					pin, owner, g.name(), failModeEffect(p)),
			}
		}
		return pin, verdict{}
	}

	if cur := p.Status.EgressIP; cur != "" && g.floating[cur] && claims.taken[cur] == "" {
		return cur, verdict{}
	}

	// First free IP in spec order, preferring one that no newer policy
	// pins or holds, so that this one does not take it from under them.
	fallback := ""
	for _, ip := range g.group.Spec.FloatingIPs {
		if claims.taken[ip] != "" || g.conflicts[ip] != "" {
			continue
		}
		if len(claims.wanted[ip]) == 0 || (len(claims.wanted[ip]) == 1 && claims.wanted[ip][p.Name]) {
			return ip, verdict{}
		}
		if fallback == "" {
			fallback = ip
		}
	}
	if fallback != "" {
		return fallback, verdict{}
	}
	return "", verdict{
		reason: v1alpha1.ReasonNoFreeFloatingIP,
		message: fmt.Sprintf("all %d floating IPs of NetworkGatewayGroup %s are the egress IPs of older policies: add a floating IP to the group; %s",
			len(g.floating), g.name(), failModeEffect(p)),
	}
}

// failModeEffect tells the user what happens to the traffic meanwhile.
func failModeEffect(p *v1alpha1.EgressNATPolicy) string {
	if p.Spec.FailMode == v1alpha1.FailModeOpen {
		return "meanwhile the selected traffic leaves with the node's IP (failMode Open)"
	}
	return "meanwhile the selected traffic is dropped (failMode Closed)"
}
