package fetch

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/shoalproject/shoal/agent/internal/origin"
)

// viaHTTP fetches the rest of the blob from the upstream, resuming at the
// present prefix with Range. plain, if set, is an already-open response
// with the whole blob.
func (d *dl) viaHTTP(ctx context.Context, plain *http.Response) error {
	if d.blob.PieceLength() == 0 {
		// No piece hashes: what an earlier download of the blob left
		// counts up to where its sha256 checkpoint says, once the file
		// hashes to it again.
		if n, err := d.blob.RecoverPrefix(); err != nil {
			return err
		} else if n > 0 {
			d.log.WithField("bytes", n).Info("continuing an interrupted download from its verified prefix")
			d.fe.deps.Metrics.Resumed(n)
			if plain != nil {
				plain.Body.Close() // a Range request for the rest instead
				plain = nil
			}
		}
	}
	const attempts = 4
	var lastErr error
	for i := 0; i < attempts && !d.blob.Complete(); i++ {
		resp := plain
		plain = nil
		off := d.blob.Prefix()
		var c origin.Cred
		if resp == nil {
			c = d.f.Credential()
			var err error
			resp, err = d.fe.deps.Origin.GetBlob(ctx, d.req.Base, c, d.req.Hex, off)
			if err != nil {
				lastErr = fmt.Errorf("fetch blob over HTTP: %w", err)
				if ctx.Err() != nil {
					return ctx.Err()
				}
				time.Sleep(time.Duration(i+1) * 200 * time.Millisecond)
				continue
			}
		}
		skip, err := d.accept(ctx, resp, off)
		var ue *origin.UpstreamError
		switch {
		case errors.As(err, &ue):
			if origin.IsRefusal(ue) && c != (origin.Cred{}) && d.f.SwitchCred(c, true) {
				// These credentials expired or never worked: another
				// requester's, without spending an attempt.
				i--
				continue
			}
			if off == 0 && ue.Status < 500 {
				return ue
			}
			lastErr = ue
			continue
		case err != nil:
			return err
		}
		err = d.copyBody(ctx, resp.Body, off, skip)
		resp.Body.Close()
		if err != nil {
			lastErr = err
			if ctx.Err() != nil {
				return ctx.Err()
			}
			d.log.WithError(err).Warn("HTTP blob transfer interrupted; resuming")
			continue
		}
		if d.blob.Size() < 0 { // no Content-Length: the end of the body is the end
			if err := d.setSize(ctx, d.blob.Prefix()); err != nil {
				return err
			}
		}
	}
	if !d.blob.Complete() {
		if lastErr == nil {
			lastErr = errors.New("upstream body shorter than the blob")
		}
		return fmt.Errorf("fetch blob sha256:%s over HTTP: %w", d.req.Hex, lastErr)
	}
	return nil
}

// accept checks an answer to a request of the blob from off: a 200 (the
// whole blob, of which the first skip bytes are already here) or a 206
// starting at off, either of a size the blob agrees with. Any other status
// is an *origin.UpstreamError, the body closed; so is resp on every error.
func (d *dl) accept(ctx context.Context, resp *http.Response, off int64) (skip int64, err error) {
	switch resp.StatusCode {
	case http.StatusOK:
		if resp.ContentLength >= 0 {
			err = d.setSize(ctx, resp.ContentLength)
		}
		skip = off // a full answer to a Range request: drop what we have
	case http.StatusPartialContent:
		start, _, total, perr := parseContentRange(resp.Header.Get("Content-Range"))
		if perr != nil || start != off {
			err = fmt.Errorf("fetch blob over HTTP: bad Content-Range %q for offset %d", resp.Header.Get("Content-Range"), off)
		} else {
			err = d.setSize(ctx, total)
		}
	default:
		body, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
		err = &origin.UpstreamError{Status: resp.StatusCode, Header: resp.Header, Body: body}
	}
	if err != nil {
		resp.Body.Close()
	}
	return skip, err
}

// parseContentRange reads a 206's "bytes first-last/total" (RFC 9110).
func parseContentRange(h string) (first, last, total int64, err error) {
	bad := fmt.Errorf("invalid Content-Range %q", h)
	spec, ok := strings.CutPrefix(h, "bytes ")
	if !ok {
		return 0, 0, 0, bad
	}
	rng, tot, ok := strings.Cut(spec, "/")
	if !ok {
		return 0, 0, 0, bad
	}
	f, l, ok := strings.Cut(rng, "-")
	if !ok {
		return 0, 0, 0, bad
	}
	nums := [3]int64{}
	for i, s := range []string{f, l, tot} {
		if s == "" || s[0] < '0' || s[0] > '9' {
			return 0, 0, 0, bad
		}
		if nums[i], err = strconv.ParseInt(s, 10, 64); err != nil {
			return 0, 0, 0, bad
		}
	}
	first, last, total = nums[0], nums[1], nums[2]
	if first > last || last >= total {
		return 0, 0, 0, bad
	}
	return first, last, total, nil
}

// setSize records the size a plain HTTP answer gives, bounded by the
// cache, and takes the blob's room in it.
func (d *dl) setSize(ctx context.Context, n int64) error {
	if n > d.fe.cfg.MaxBytes {
		return fmt.Errorf("blob sha256:%s: %d bytes exceed cache.maxBytes", d.req.Hex, n)
	}
	if err := d.blob.SetSize(n); err != nil {
		return err
	}
	d.prog.Size(n)
	return d.reserve(ctx, n)
}

// waitHTTP holds back n bytes of download to the configured rate.
func (fe *Fetcher) waitHTTP(ctx context.Context, n int) error {
	lim := fe.httpRate
	if lim == nil {
		return nil
	}
	for done := 0; done < n; done += lim.Burst() {
		if err := lim.WaitN(ctx, min(lim.Burst(), n-done)); err != nil {
			return err
		}
	}
	return nil
}

// copyBody appends an HTTP body to the blob from off, after skipping skip
// bytes of it. Without a known size the body is still bounded by the cache.
func (d *dl) copyBody(ctx context.Context, body io.Reader, off, skip int64) error {
	if skip > 0 {
		if _, err := io.CopyN(io.Discard, body, skip); err != nil {
			return err
		}
	}
	if size := d.blob.Size(); size >= 0 {
		// Not a byte past the size the upstream gave, whatever the body
		// (no Content-Length, or a longer one) goes on to send: the digest
		// judges what the size holds.
		body = io.LimitReader(body, size-off)
	}
	buf := make([]byte, 1<<20)
	lastLog := time.Now()
	for {
		n, err := io.ReadFull(body, buf)
		if time.Since(lastLog) >= 10*time.Second {
			lastLog = time.Now()
			d.log.WithFields(logrus.Fields{"bytes": off, "size": d.blob.Size()}).Info("HTTP download progress")
		}
		if n > 0 {
			if off+int64(n) > d.fe.cfg.MaxBytes {
				return fmt.Errorf("upstream sent more than cache.maxBytes")
			}
			// A body of unknown size takes its room as it comes (a no-op
			// once the size is known and reserved).
			if err := d.reserve(ctx, off+int64(n)); err != nil {
				return err
			}
			if werr := d.fe.waitHTTP(ctx, n); werr != nil {
				return werr
			}
			if werr := d.blob.Append(off, buf[:n]); werr != nil {
				return werr
			}
			off += int64(n)
			d.fromRegistry.Add(int64(n))
			d.prog.HTTPBytes(int64(n))
		}
		if err == io.EOF || err == io.ErrUnexpectedEOF {
			return nil
		}
		if err != nil {
			return err
		}
	}
}
