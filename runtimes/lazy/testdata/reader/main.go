// Command reader is the program of the lazily pulled test image: it reads a
// little of a big file, so that the snapshotter fetches only the spans
// holding those bytes and the rest of the layer stays in the registry.
package main

import (
	"crypto/sha256"
	"fmt"
	"os"
)

// readAt is where the 64 KiB read starts (lazy_test.go's readAt).
const readAt = 14 << 20

func main() {
	f, err := os.Open("/data/random")
	if err != nil {
		fmt.Println(err)
		os.Exit(1)
	}
	// Near the end: the Range the snapshotter sends for it starts past the
	// layer's verified prefix, so the agent must answer it from pieces
	// fetched out of order.
	b := make([]byte, 64<<10)
	if _, err := f.ReadAt(b, readAt); err != nil {
		fmt.Println(err)
		os.Exit(1)
	}
	fmt.Printf("middle %x\n", sha256.Sum256(b))
}
