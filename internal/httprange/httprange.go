// Package httprange is the one parser of HTTP Range headers for blob
// bodies, used by the registry's piece endpoint and the agent's mirror and
// data listener: blobs are fetched by single byte ranges, and anything else a
// client sends is refused rather than guessed at.
package httprange

import (
	"strconv"
	"strings"
)

// Parse resolves the Range header values of a request against a blob of
// size bytes and returns the first byte and the length. Exactly one range is
// accepted: bytes=first-last (last clamped to the blob), bytes=first- or
// bytes=-suffix. Anything else (several ranges, other units, malformed
// numbers, a range starting past the end) is refused, so a client bug shows
// up as 416 rather than as a whole blob it did not ask for.
func Parse(values []string, size int64) (start, n int64, ok bool) {
	if len(values) != 1 {
		return 0, 0, false
	}
	spec, ok := strings.CutPrefix(strings.TrimSpace(values[0]), "bytes=")
	if !ok || strings.Contains(spec, ",") {
		return 0, 0, false
	}
	firstStr, lastStr, ok := strings.Cut(strings.TrimSpace(spec), "-")
	if !ok {
		return 0, 0, false
	}
	if firstStr == "" {
		// Suffix: the last n bytes.
		suffix, ok := parseDecimal(lastStr)
		if !ok || suffix == 0 || size == 0 {
			return 0, 0, false
		}
		suffix = min(suffix, size)
		return size - suffix, suffix, true
	}
	first, ok := parseDecimal(firstStr)
	if !ok || first >= size {
		return 0, 0, false
	}
	last := size - 1
	if lastStr != "" {
		l, ok := parseDecimal(lastStr)
		if !ok || l < first {
			return 0, 0, false
		}
		last = min(l, last)
	}
	return first, last - first + 1, true
}

// parseDecimal accepts ASCII digits only (no sign, no spaces), up to int64.
func parseDecimal(s string) (int64, bool) {
	if s == "" || len(s) > 19 {
		return 0, false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return 0, false
		}
	}
	n, err := strconv.ParseInt(s, 10, 64)
	return n, err == nil
}
