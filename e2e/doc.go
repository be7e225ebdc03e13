// Package e2e brings up a Shoal cluster on one Linux machine: every host is
// its own network namespace with its own address, joined by a bridge that
// lives in a namespace the harness creates, each link shaped with tc. The
// tests (TestQuick, TestMatrix) run real `shoal registry`, `shoal tracker`
// and `shoal agent` processes inside those namespaces and pull images through
// them with go-containerregistry, verifying every digest.
//
// Nothing is added to the root namespace: the test process reaches a
// namespace's addresses by dialing from an OS thread that has joined that
// namespace (setns), so its pulls leave through that host's shaped veth.
package e2e
