// Package client calls a preheat replica's job API (/api/v1/jobs): what
// `shoal preheat create|status|list|cancel` and the tests use, so the
// request and error shapes are written once.
package client

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/shoalproject/shoal/preheat"
)

// maxResponse bounds what is read of one reply: a job view with its
// per-node progress is the largest, far below this.
const maxResponse = 16 << 20

// Client is a preheat API caller. The zero HTTP client is replaced by one
// with a 60 s timeout.
type Client struct {
	base  string
	token string
	http  *http.Client
}

// New returns a client of the replica at base (http://host:port) that
// sends token, when not empty, as a bearer token. hc nil: a client with a
// 60 s timeout.
func New(base, token string, hc *http.Client) *Client {
	if hc == nil {
		hc = &http.Client{Timeout: 60 * time.Second}
	}
	return &Client{base: strings.TrimSuffix(base, "/"), token: token, http: hc}
}

// Error is a refusal by the replica: its status and the httpx error body.
type Error struct {
	Method, Path string
	Status       int
	// Code and Message are the {"error","code"} body, when it had one.
	Code, Message string
}

func (e *Error) Error() string {
	s := fmt.Sprintf("%s %s: %d %s", e.Method, e.Path, e.Status, http.StatusText(e.Status))
	if e.Message != "" {
		s += ": " + e.Message
	}
	return s
}

// CreateJob asks for a job; the reply is the new job, or the unfinished
// job the request deduplicated to.
func (c *Client) CreateJob(ctx context.Context, req preheat.JobRequest) (*preheat.JobView, error) {
	var v preheat.JobView
	return &v, c.Do(ctx, http.MethodPost, "/api/v1/jobs", req, &v)
}

// Job returns a job with its progress.
func (c *Client) Job(ctx context.Context, id int64) (*preheat.JobView, error) {
	var v preheat.JobView
	return &v, c.Do(ctx, http.MethodGet, "/api/v1/jobs/"+strconv.FormatInt(id, 10), nil, &v)
}

// Jobs returns up to limit jobs, newest first (limit <= 0: the replica's
// default).
func (c *Client) Jobs(ctx context.Context, limit int) ([]preheat.Job, error) {
	p := "/api/v1/jobs"
	if limit > 0 {
		p += "?" + url.Values{"limit": {strconv.Itoa(limit)}}.Encode()
	}
	var out struct {
		Jobs []preheat.Job `json:"jobs"`
	}
	return out.Jobs, c.Do(ctx, http.MethodGet, p, nil, &out)
}

// CancelJob cancels a job and returns its record.
func (c *Client) CancelJob(ctx context.Context, id int64) (*preheat.Job, error) {
	var j preheat.Job
	return &j, c.Do(ctx, http.MethodDelete, "/api/v1/jobs/"+strconv.FormatInt(id, 10), nil, &j)
}

// Do sends body (nil: none) as JSON and decodes a 2xx reply into out (nil:
// discarded); any other status is an *Error.
func (c *Client) Do(ctx context.Context, method, path string, body, out any) error {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return fmt.Errorf("%s %s: encode request: %w", method, path, err)
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, c.base+path, rd)
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return fmt.Errorf("preheat API %s: %w", c.base, err)
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(io.LimitReader(resp.Body, maxResponse))
	if err != nil {
		return fmt.Errorf("%s %s: read response: %w", method, path, err)
	}
	if resp.StatusCode < 200 || resp.StatusCode >= 300 {
		e := &Error{Method: method, Path: path, Status: resp.StatusCode}
		var body struct {
			Error string `json:"error"`
			Code  string `json:"code"`
		}
		if json.Unmarshal(raw, &body) == nil {
			e.Code, e.Message = body.Code, body.Error
		}
		return e
	}
	if out != nil {
		if err := json.Unmarshal(raw, out); err != nil {
			return fmt.Errorf("%s %s: bad response: %w", method, path, err)
		}
	}
	return nil
}
