package datapath

import (
	"testing"

	"github.com/nsegress/nsegress/nft"
)

// TestTrafficToAServiceOfADestinationLeavesWithTheEgressIP: a selected pod
// that reaches a backend through a Service (a ClusterIP whose endpoint is
// the backend, DNATed the way kube-proxy's nftables mode does it, at the
// dstnat priority of prerouting) is marked by the endpoint it goes to and
// leaves with the egress IP; without that it would leave with the node's
// address, which the firewall drops.
func TestTrafficToAServiceOfADestinationLeavesWithTheEgressIP(t *testing.T) {
	requireNetNS(t)
	l := newLab(t)
	programPolicy(t, l, map[nft.PodKey]uint16{{IP: podIP, HostIf: podHostIf}: 1}, nil)
	// A Service without a selector whose EndpointSlice names the backend,
	// as kube-proxy programs it: a ClusterIP from the Service range.
	const clusterIP = "198.19.128.10"
	l.worker.runStdin(t, `
table ip kubeproxy {
	chain nat-prerouting {
		type nat hook prerouting priority dstnat; policy accept;
		ip daddr `+clusterIP+` tcp dport 80 dnat to `+backendIP.String()+`:80
	}
}
`, "nft", "-f", "-")

	if src, _ := whoami(t, l.pod, "http://"+clusterIP); src != egressIP {
		t.Errorf("through the Service the backend saw %s, want the egress IP %s", src, egressIP)
	}
	// A pod no policy selects reaches the Service's backend the normal
	// way, which the firewall drops.
	expectDropped(t, l.pod2, "http://"+clusterIP)
}
