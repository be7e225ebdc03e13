package main

import (
	"context"
	"fmt"
	"net"
)

// component is every Shoal component as the binary runs it
// (docs/conventions.md, "Lifecycle").
type component interface {
	Serve(ctx context.Context, l net.Listener) error
	Close() error
}

// listen opens the main listener of c, just built, on addr. c is closed
// when the address cannot be bound, so nothing its New acquired leaks.
func listen(name string, c component, addr string) (net.Listener, error) {
	l, err := net.Listen("tcp", addr)
	if err != nil {
		_ = c.Close()
		return nil, fmt.Errorf("%s: listen %s: %w", name, addr, err)
	}
	return l, nil
}
