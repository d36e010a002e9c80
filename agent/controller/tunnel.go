package controller

import (
	"k8s.io/apimachinery/pkg/types"

	"github.com/nsegress/nsegress/api/v1alpha1"
)

// maxTunnelID is the largest tunnel ID the API allows.
const maxTunnelID = v1alpha1.MaxTunnelID

// assignTunnelIDs gives every policy, Ready or not, a tunnel ID: nodes need
// it even to drop a fail-closed policy's traffic. A policy keeps the ID it
// has unless an older policy has the same one; the others get new IDs,
// oldest first, counting up from the highest ID ever handed out
// (highWater, persisted, or the highest in use if that is higher) and
// wrapping to the smallest free one only when the range is exhausted: a
// deleted policy's ID, even the newest one's, is not handed out again
// while nodes that have not seen the deletion yet may still steer its
// pods with it. Keeping runs over all policies before any new ID is
// handed out, so that an older policy without an ID never takes the one
// a newer policy already uses. An ID of 0 means none was free. It also
// returns the new high-water mark: the highest of highWater and every ID
// in use now.
func assignTunnelIDs(policies []*v1alpha1.EgressNATPolicy, highWater int32, recent map[types.UID]int32) (map[string]int32, int32) {
	ids := make(map[string]int32, len(policies))
	used := make(map[int32]bool, len(policies))
	for _, p := range policies {
		if id := p.Status.TunnelID; id >= 1 && id <= maxTunnelID && !used[id] {
			ids[p.Name] = id
			used[id] = true
		}
	}
	// An ID handed out but not in the status yet stays the policy's:
	// counting up past the high-water mark would give it another.
	for _, p := range policies {
		if _, kept := ids[p.Name]; kept {
			continue
		}
		if id := recent[p.UID]; p.UID != "" && id >= 1 && id <= maxTunnelID && !used[id] {
			ids[p.Name] = id
			used[id] = true
		}
	}
	if highWater < 0 || highWater > maxTunnelID {
		highWater = 0
	}
	next := highWater + 1
	for id := range used {
		next = max(next, id+1)
	}
	for _, p := range policies {
		if _, kept := ids[p.Name]; kept {
			continue
		}
		if next > maxTunnelID || used[next] {
			next = 1 // the range is exhausted: the smallest free ID
		}
		for next <= maxTunnelID && used[next] {
			next++
		}
		if next > maxTunnelID {
			ids[p.Name] = 0
			continue
		}
		ids[p.Name] = next
		used[next] = true
		next++
	}
	for id := range used {
		highWater = max(highWater, id)
	}
	return ids, highWater
}
