package store

import (
	"context"
	"io"
	"os"

	"golang.org/x/time/rate"
)

// SendRange copies n bytes of f from off to w: one sendfile(2) when no rate
// limit applies (net/http hands an *os.File behind an io.LimitedReader to
// the kernel), limiter-sized steps otherwise. f's offset moves: give it a
// descriptor of its own.
func SendRange(ctx context.Context, w io.Writer, f *os.File, off, n int64, lim *rate.Limiter) (int64, error) {
	if _, err := f.Seek(off, io.SeekStart); err != nil {
		return 0, err
	}
	if lim == nil {
		return io.Copy(w, io.LimitReader(f, n))
	}
	var sent int64
	for sent < n {
		step := min(n-sent, int64(lim.Burst()))
		if err := lim.WaitN(ctx, int(step)); err != nil {
			return sent, err
		}
		m, err := io.Copy(w, io.LimitReader(f, step))
		sent += m
		if err != nil {
			return sent, err
		}
	}
	return sent, nil
}
