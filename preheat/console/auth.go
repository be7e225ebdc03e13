package console

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/time/rate"

	"github.com/shoalproject/shoal/internal/httpx"
)

// sessionValue is "<expiry unix>.<hmac>", keyed by the API token it was
// made with: stateless, so every replica with the same tokens accepts it,
// and removing a token from the config ends its sessions.
func sessionValue(token string, exp time.Time) string {
	e := strconv.FormatInt(exp.Unix(), 10)
	m := hmac.New(sha256.New, []byte(token))
	m.Write([]byte("shoal-console-session\x00" + e))
	return e + "." + hex.EncodeToString(m.Sum(nil))
}

func (c *Console) validSession(v string, now time.Time) bool {
	e, _, ok := strings.Cut(v, ".")
	exp, err := strconv.ParseInt(e, 10, 64)
	if !ok || err != nil || now.Unix() >= exp || exp > now.Add(sessionTTL+time.Minute).Unix() {
		return false
	}
	for _, t := range c.d.Tokens.Values() {
		if hmac.Equal([]byte(v), []byte(sessionValue(t, time.Unix(exp, 0)))) {
			return true
		}
	}
	return false
}

func (c *Console) bearerOK(r *http.Request) bool {
	got, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	return ok && c.d.Tokens.Match(strings.TrimSpace(got))
}

// auth admits a console API call (see the package comment).
func (c *Console) auth(h http.HandlerFunc) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if len(c.d.Tokens) == 0 {
			if ok, why := c.d.Open(r); !ok {
				httpx.WriteError(w, http.StatusForbidden, "", why)
				return
			}
		} else if !c.bearerOK(r) {
			ck, err := r.Cookie(sessionCookie)
			if err != nil || !c.validSession(ck.Value, c.d.Now()) {
				httpx.WriteError(w, http.StatusUnauthorized, "", "log in with a preheat API token")
				return
			}
		}
		if r.Method != http.MethodGet && r.Header.Get(Header) == "" && !c.bearerOK(r) {
			httpx.WriteError(w, http.StatusForbidden, "", "console writes need the "+Header+" header")
			return
		}
		h(w, r)
	})
}

func (c *Console) handleSession(w http.ResponseWriter, r *http.Request) {
	out := map[string]any{"auth": "token", "loggedIn": false}
	if len(c.d.Tokens) == 0 {
		ok, why := c.d.Open(r)
		out["auth"], out["loggedIn"] = "open", ok
		if !ok {
			out["error"] = why
		}
	} else if ck, err := r.Cookie(sessionCookie); err == nil && c.validSession(ck.Value, c.d.Now()) {
		out["loggedIn"] = true
	}
	httpx.WriteJSON(w, http.StatusOK, out)
}

func (c *Console) handleLogin(w http.ResponseWriter, r *http.Request) {
	if r.Header.Get(Header) == "" {
		httpx.WriteError(w, http.StatusForbidden, "", "log in from the console page")
		return
	}
	if len(c.d.Tokens) == 0 {
		httpx.WriteError(w, http.StatusBadRequest, "", "no apiTokens are configured: there is nothing to log in with")
		return
	}
	if !c.logins.allow(clientAddr(r), c.d.Now()) {
		w.Header().Set("Retry-After", strconv.Itoa(int(loginEvery/time.Second)))
		httpx.WriteError(w, http.StatusTooManyRequests, "", "too many login attempts; wait and try again")
		return
	}
	var req struct {
		Token string `json:"token"`
	}
	if err := c.d.Decode(r, &req); err != nil {
		c.d.Fail(w, err)
		return
	}
	if strings.TrimSpace(req.Token) == "" {
		httpx.WriteError(w, http.StatusBadRequest, "", "enter an API token")
		return
	}
	var token string
	for _, t := range c.d.Tokens.Values() {
		if hmac.Equal([]byte(strings.TrimSpace(req.Token)), []byte(t)) {
			token = t
		}
	}
	if token == "" {
		c.d.Log.WithField("remote", r.RemoteAddr).Warn("console login with a wrong token")
		httpx.WriteError(w, http.StatusUnauthorized, "", "that is not one of the preheat API tokens")
		return
	}
	exp := c.d.Now().Add(sessionTTL)
	http.SetCookie(w, &http.Cookie{Name: sessionCookie, Value: sessionValue(token, exp), Path: "/console/",
		Expires: exp, HttpOnly: true, Secure: r.TLS != nil, SameSite: http.SameSiteStrictMode})
	w.WriteHeader(http.StatusNoContent)
}

func (c *Console) handleLogout(w http.ResponseWriter, r *http.Request) {
	http.SetCookie(w, &http.Cookie{Name: sessionCookie, Value: "", Path: "/console/", MaxAge: -1,
		HttpOnly: true, Secure: r.TLS != nil, SameSite: http.SameSiteStrictMode})
	w.WriteHeader(http.StatusNoContent)
}

// limiter bounds login attempts per client address and in
// total, so a token cannot be guessed at network speed and one client
// cannot lock everyone else out for long. Its memory is bounded too: it
// keeps at most maxClients addresses, dropping the idle ones first.
type limiter struct {
	mu      sync.Mutex
	total   *rate.Limiter
	clients map[string]*clientLimit
	every   time.Duration
	burst   int
}

type clientLimit struct {
	l    *rate.Limiter
	seen time.Time
}

const (
	// LoginBurst is how many logins a client may try at once.
	LoginBurst      = 5
	loginEvery      = 6 * time.Second // 10 a minute once the burst is spent
	loginTotalBurst = 50
	loginTotalEvery = 200 * time.Millisecond
	loginMaxClients = 4096
)

func newLimiter() *limiter {
	return &limiter{total: rate.NewLimiter(rate.Every(loginTotalEvery), loginTotalBurst),
		clients: map[string]*clientLimit{}, every: loginEvery, burst: LoginBurst}
}

// allow reports whether client may try to log in at now.
func (l *limiter) allow(client string, now time.Time) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	c, ok := l.clients[client]
	if !ok {
		if len(l.clients) >= loginMaxClients {
			l.prune(now)
		}
		if len(l.clients) >= loginMaxClients {
			return false // the total bound would refuse it soon anyway
		}
		c = &clientLimit{l: rate.NewLimiter(rate.Every(l.every), l.burst)}
		l.clients[client] = c
	}
	c.seen = now
	if !c.l.AllowN(now, 1) {
		return false
	}
	return l.total.AllowN(now, 1)
}

// prune drops clients idle long enough for their bucket to be full again:
// forgetting them changes nothing.
func (l *limiter) prune(now time.Time) {
	for k, c := range l.clients {
		if now.Sub(c.seen) > l.every*time.Duration(l.burst) {
			delete(l.clients, k)
		}
	}
}

// clientAddr is the remote IP of r (no port: one client, many ports).
func clientAddr(r *http.Request) string {
	h, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		return r.RemoteAddr
	}
	return h
}
