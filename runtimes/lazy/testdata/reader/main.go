// Command reader is the program of the lazily pulled test image: it reads a
// little of a big file, so that the snapshotter fetches only the spans
// holding those bytes and the rest of the layer stays in the registry.
package main

import (
	"crypto/sha256"
	"fmt"
	"io"
	"os"
)

func main() {
	f, err := os.Open("/data/random")
	if err != nil {
		fmt.Println(err)
		os.Exit(1)
	}
	b := make([]byte, 64<<10)
	if _, err := io.ReadFull(f, b); err != nil {
		fmt.Println(err)
		os.Exit(1)
	}
	fmt.Printf("head %x\n", sha256.Sum256(b))
}
