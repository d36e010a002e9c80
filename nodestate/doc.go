// Package nodestate is the contract between the nsegress CNI plugin and
// the node's agent: everything the two processes share on one node, and
// nothing else. Both sides import it; neither imports the other.
//
// What they share (docs/design.md §4):
//
//   - the plugin's conflist entry (Entry), which the agent writes and the
//     plugin parses;
//   - the state directory (State): one PodRecord per pod address, an index
//     from container to record, the lock that orders changes of records and
//     of the nft pods map, the agent's Snapshot that ADD falls back to, the
//     floating IPs the node has held, and the agent's unix socket;
//   - the socket's answer (View) and its path;
//   - WriteFile, the one way nsegress replaces a file on the node.
package nodestate
