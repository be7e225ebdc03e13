//go:build tools

// Package conformance pins the OCI distribution-spec conformance suite; the
// Makefile builds its test binary from here.
package conformance

import _ "github.com/opencontainers/distribution-spec/conformance"
