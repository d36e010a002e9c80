// Package ctsync replicates a gateway's SNAT conntrack entries to its
// peers, so that a standby that takes a floating IP over keeps the
// established flows NATed to it.
//
// The gateway holding a floating IP runs a Server; each peer runs a
// Follower of it. Without the entries, the standby's first packet of a
// flow is often the backend's: it is addressed to the floating IP,
// which is now local, matches no conntrack entry, and the standby's TCP
// stack answers it with RST.
//
// # What is replicated
//
// IPv4 TCP and UDP entries that are source-NATed (IPS_SRC_NAT, and not
// destination-NATed), whose conntrack mark has a bit in
// Config.MarkMask, and whose NAT address (the reply tuple's destination)
// Server.Select selects. The follower tests the mark again.
//
// # Protocol
//
// TCP from follower to server. Handshake: the follower sends a magic
// string and a 32-byte nonce Nf; the server answers with the magic, a
// nonce Ns and HMAC(Key, "server proof" | Nf | Ns); the follower checks
// it and sends HMAC(Key, "follower proof" | Nf | Ns). Both then use
// HMAC(Key, "session key" | Nf | Ns) as the session key. The server
// checks the follower's address with Allowed before the handshake.
//
// Then only the server sends, frames of: payload length (4 bytes,
// at most one batch of 1024 entries), sequence number (8, from 0, one
// more per frame), payload, HMAC-SHA256 under the session key of all
// before it. A bad MAC, a sequence number other than the next, or an
// oversize length ends the session; fresh nonces make frames of one
// session worthless in another. A payload is a kind, the time the
// server read its content from the kernel, and entries of 36 bytes
// (see appendEntry). A full dump is framed by dump-start and dump-end
// messages; at dump-end the follower deletes what it injected earlier
// and the dump no longer holds (a DESTROY it missed); the entries of an
// IP the follower's own node holds now are the exception (Follower.Local):
// it only adds those it lacks, and moves on those its kernel still has
// in a TCP handshake the server has completed. The server sends a
// heartbeat every second when idle; a follower that hears nothing for
// five seconds reconnects.
//
// # Trust
//
// Whoever knows Key can, as a server, write any NAT binding into the
// conntrack table of every follower (steering or hijacking flows through
// the standby), and, as a follower, read which pods talk to which
// destinations. Key is as secret as the node's credentials. The channel
// is authenticated, not encrypted: the entries travel in clear on the
// node network.
//
// # What the kernel needs (found on 6.18 with netns tests)
//
// An injected entry is un-NATed on the standby only when created with:
//
//   - CTA_TUPLE_ORIG, and CTA_TUPLE_REPLY as the plain inverse of it.
//     The kernel computes the NATed reply tuple from CTA_NAT_SRC
//     (nf_nat_setup_info), and that is also what sets IPS_SRC_NAT and
//     IPS_SRC_NAT_DONE: CTA_STATUS cannot set NAT bits. Given the NATed
//     reply tuple instead, the tuple is "already mapped", the status
//     stays without SRC_NAT, and replies are not translated.
//   - CTA_NAT_SRC with CTA_NAT_V4_MINIP = MAXIP = the floating IP and
//     CTA_NAT_PROTO with CTA_PROTONAT_PORT_MIN = MAX = the active's NAT
//     port. A standby choosing its own port maps two flows that the
//     active mapped apart (two pods, one source port) onto one tuple,
//     and the second creation fails with EEXIST.
//   - CTA_STATUS including IPS_CONFIRMED: the kernel marks a created
//     entry confirmed before applying CTA_STATUS, and answers EBUSY to a
//     status that would clear it. SEEN_REPLY and ASSURED are copied.
//   - CTA_TIMEOUT (required), CTA_MARK (the policy, for the nft rules),
//     and for TCP CTA_PROTOINFO_TCP with the state and, per direction,
//     the flags {flags, mask} with IP_CT_TCP_FLAG_BE_LIBERAL added:
//     ctnetlink carries no window data, so the standby's first segments
//     are checked against windows it never saw. (The failover test
//     passes without BE_LIBERAL too; it is kept for flows with data in
//     flight.)
//   - NAT hooks registered in the standby's namespace: the replies are
//     un-NATed by the NAT core's hooks, which exist only while some nat
//     chain does; nsegress programs the same SNAT chain on every gateway.
//
// NAT attributes cannot change on an existing entry (EOPNOTSUPP). So a
// creation that fails with EEXIST looks the holder up: the same binding
// is updated in place (timeout, mark, TCP state and flags); anything
// else (an entry the kernel made from a mid-stream packet, without NAT,
// or a stale binding) is deleted, with whatever holds the NATed reply
// tuple, and the entry created again.
//
// Events are per network namespace, so Server and Follower open their
// netlink sockets in the namespace of the thread that calls them. With
// net.netfilter.nf_conntrack_events = 2 (the default) the kernel gives
// an entry an event cache only if a listener exists when the entry is
// created: entries older than the Server never produce events, not even
// DESTROY. The periodic full dump refreshes and sweeps them; setting the
// sysctl to 1 makes their events flow too.
//
// The follower does its requests on a plain netlink socket rather than
// through github.com/mdlayher/netlink: the kernel answers a ctnetlink GET
// with one message flagged NLM_F_MULTI followed by an ACK, no
// NLMSG_DONE, and that library (v1.11) waits for the DONE for ever.
package ctsync
