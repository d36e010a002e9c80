// Package ha is the gateway high-availability runtime of the agent: the
// fast path that moves a floating IP off a dead gateway without the API
// server (docs/design.md §2, "Gateway high availability").
//
// Every agent runs it. Gateways of a group send each other sealed UDP
// heartbeats (message.go) naming the IPs they hold, at which epoch, with
// which standby. The standby of an IP whose holder falls silent probes
// the IP with ARP (arp.go): a live kernel answers even when its agent is
// dead, and then nothing moves; no answer, while the standby's own router
// answers, is a death, and the standby claims the IP at the next epoch
// (check.go). Who holds what is computed from the API's assignments, the
// claims heard and this node's own takeovers (decide.go); the node role
// plans from those holders. A new holder pushes its claim to every node,
// records it on its Node for the controller (claims.go), and the
// gateways replicate their SNAT conntrack entries to each other
// (replicate.go, package ctsync), so that connections survive the move.
//
// Trust: the HMAC key (key.go) authenticates everything; whoever holds it
// can claim IPs towards every node and inject NAT state into gateways.
package ha
