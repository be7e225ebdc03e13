// Package runtimes holds the tests that pull images through `shoal agent`
// with the container runtimes users point at it: Docker (Docker-style
// addressing and registry-mirrors), Podman and Skopeo (registries.conf
// mirror), containerd 2 (ctr with hosts.toml, and the CRI image service via
// crictl with parallel Range requests). Every test starts real processes
// (`shoal registry`, `shoal tracker`, `shoal agent`, the runtime's daemon)
// and checks digests and, from the agent's metrics, that the bytes came
// through the agent. The tests need root; `make test` installs or builds
// every runtime (scripts/install-test-deps.sh, bin/), and without one its
// test skips saying how to get it.
package runtimes
