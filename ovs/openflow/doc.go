// Package openflow is Seine's OpenFlow 1.5 + Nicira-extension codec and
// connection: flow, group and meter mods, bundles, packet-out and
// NXT_PACKET_IN2, multipart statistics, and the matches and actions an
// Antrea-style pipeline uses (registers, conntrack with NAT, conjunction,
// learn, resubmit, controller2, tunnel metadata).
//
// Flows are built with chained builders and keep their wire encoding, so a
// cached flow is small; every value renders itself as the text
// "ovs-ofctl -O OpenFlow15 dump-flows --no-stats" prints. See README.md for
// the coverage table and what is left out.
package openflow
