// Package access is the vocabulary shared across the seams of the request
// path: the Principal that authentication yields (whatever the kind of
// credential), what a route requires of it, and the Decision of
// admission. authn produces Principals, the proxy routes, authorizes and
// forwards with them, the limiter takes and returns Decisions, and
// internal/app wires them together: none of them converts the others'
// types. It holds plain types, sentinels and the numbering of module
// names, and imports nothing of
// the module, so every package may import it.
package access

import (
	"bytes"
	"encoding/base64"
	"errors"
	"net/netip"
	"sync"
)

// Kind is the kind of a credential: how it is presented and verified.
type Kind uint8

// Credential kinds. The zero Kind matches nothing.
const (
	// KindAPIKey is an API key in a configured header or an
	// "Authorization: <scheme> <key>" field.
	KindAPIKey Kind = 1 + iota
	// KindBasic is a user's name and password in "Authorization: Basic".
	KindBasic
	// KindBearer is an OAuth2 access token in "Authorization: Bearer".
	KindBearer
	// KindClient is an OAuth client (id and secret); it authenticates at
	// the token endpoint, not on routes.
	KindClient
)

// String is the kind's name: the value of X-Tollgate-Auth and of
// routes[].auth.
func (k Kind) String() string {
	switch k {
	case KindAPIKey:
		return "api_key"
	case KindBasic:
		return "basic"
	case KindBearer:
		return "bearer"
	case KindClient:
		return "client"
	}
	return ""
}

// KindNamed returns the kind called name, or 0.
func KindNamed(name string) Kind {
	for k := KindAPIKey; k <= KindClient; k++ {
		if k.String() == name {
			return k
		}
	}
	return 0
}

// Kinds is a set of kinds: a route's accepted credentials.
type Kinds uint8

// Has reports whether k is in the set.
func (s Kinds) Has(k Kind) bool { return k != 0 && s&(1<<k) != 0 }

// With returns the set with k added.
func (s Kinds) With(k Kind) Kinds { return s | 1<<k }

// Scopes is a set of up to 64 scopes, as bits. The first four are the
// method classes a scoped token may be limited to; the rest are named in
// the configuration.
type Scopes uint64

// The method classes (DESIGN.md scenario 5).
const (
	ScopeCreate Scopes = 1 << iota
	ScopeRead
	ScopeUpdate
	ScopeDelete
)

// AllScopes grants everything: the scopes of a credential that has none
// configured, so that scopes only ever narrow.
const AllScopes = ^Scopes(0)

// Covers reports whether s holds every scope of need.
func (s Scopes) Covers(need Scopes) bool { return s&need == need }

// MethodScope is the method class of an HTTP method: POST creates;
// GET, HEAD and OPTIONS read; PUT and PATCH update; DELETE deletes.
// Other methods need all four.
func MethodScope(method []byte) Scopes {
	switch string(method) {
	case "GET", "HEAD", "OPTIONS":
		return ScopeRead
	case "POST":
		return ScopeCreate
	case "PUT", "PATCH":
		return ScopeUpdate
	case "DELETE":
		return ScopeDelete
	}
	return ScopeCreate | ScopeRead | ScopeUpdate | ScopeDelete
}

// Modules is a set of up to 64 modules (DESIGN.md scenario 4: a key per
// module), as bits numbered by the configuration.
type Modules uint64

// AllModules is the module set of a credential not limited to modules.
const AllModules = ^Modules(0)

// ModuleNone is a bit no module is numbered with: a credential limited to
// modules holds it, so that one whose modules could not be numbered is
// limited to none rather than to all.
const ModuleNone Modules = 1 << 63

// modules numbers module names for the process's lifetime, so that the
// bits of a credential's Modules mean the same module across reloads of
// the configuration.
var modules struct {
	sync.Mutex
	bits map[string]Modules
}

// ModuleNamed returns the bit of the module called name, numbering it on
// first use. It returns 0 once 63 names have been numbered: a credential
// limited to such a module then holds none of it, and is refused there
// (fails closed). Not for the request path: it takes a lock.
func ModuleNamed(name string) Modules {
	modules.Lock()
	defer modules.Unlock()
	if b, ok := modules.bits[name]; ok {
		return b
	}
	if len(modules.bits) >= 63 {
		return 0
	}
	if modules.bits == nil {
		modules.bits = map[string]Modules{}
	}
	b := Modules(1) << len(modules.bits)
	modules.bits[name] = b
	return b
}

// ModuleNames returns the names of the modules in m, in numbering order.
func ModuleNames(m Modules) []string {
	modules.Lock()
	defer modules.Unlock()
	var out []string
	for i := 0; i < 64; i++ {
		if m&(1<<i) == 0 {
			continue
		}
		for name, b := range modules.bits {
			if b == 1<<i {
				out = append(out, name)
			}
		}
	}
	return out
}

// scopeText is the X-Tollgate-Scopes value of each set of the four
// method classes, built once so that the request path does not.
var scopeText = func() (t [16]string) {
	names := [...]string{"CREATE", "READ", "UPDATE", "DELETE"}
	for s := range t {
		var b []byte
		for i, n := range names {
			if s&(1<<i) != 0 {
				if len(b) > 0 {
					b = append(b, ' ')
				}
				b = append(b, n...)
			}
		}
		t[s] = string(b)
	}
	return t
}()

// String lists the method classes of s, space-separated as OAuth scopes
// are ("CREATE READ"). It does not allocate.
func (s Scopes) String() string { return scopeText[s&0xf] }

// Principal is who a verified credential is and what it may do. It is
// built by a verifier without allocating (its strings point into the
// verified credential, which is immutable) and passed by value.
type Principal struct {
	Kind Kind
	// Tenant is the tenant the request acts for. For a credential of
	// several tenants it is empty until the authorize step selects one of
	// Tenants.
	Tenant string
	// Tenants lists the tenants a credential may act for, when it may act
	// for several (a user of several companies); nil otherwise.
	Tenants []string
	// Credential is the credential's public id: the identity header and
	// the access log show it, never the secret.
	Credential string
	// Subject is the user name or client id behind the credential, when
	// there is one (Basic, Bearer).
	Subject string
	// SubjectType is the user's type ("api_only" or "standard") when
	// Subject is a user.
	SubjectType string
	Scopes      Scopes
	Modules     Modules
	// Expires is when the credential stops being valid, in Unix
	// nanoseconds; 0 never.
	Expires int64
	// RetryAfter, with ErrThrottled, is how many seconds the client
	// should wait before it authenticates again.
	RetryAfter int64
}

// MayActFor reports whether p may act for tenant.
func (p *Principal) MayActFor(tenant string) bool {
	if p.Tenants == nil {
		return tenant == p.Tenant
	}
	for _, t := range p.Tenants {
		if t == tenant {
			return true
		}
	}
	return false
}

// Presented is a credential as a request presents it, before it is
// verified. Its slices are valid only while the request is served.
type Presented struct {
	Kind Kind
	// Addr is the client's address, which failed authentications are
	// counted against.
	Addr netip.Addr
	// Secret is the key or the token; for Basic, the base64 token of
	// "user:password" as sent, which the verifier decodes with
	// DecodeBasic into storage of its own.
	Secret []byte
}

// DecodeBasic decodes a Basic token (RFC 7617) into buf without
// allocating; ok is false when token is not base64 of "user:password" or
// does not fit in buf.
func DecodeBasic(token, buf []byte) (user, password []byte, ok bool) {
	n := base64.StdEncoding.DecodedLen(len(token))
	if n > len(buf) {
		return nil, nil, false
	}
	n, err := base64.StdEncoding.Decode(buf[:n], token)
	if err != nil {
		return nil, nil, false
	}
	b := buf[:n]
	i := bytes.IndexByte(b, ':')
	if i < 0 {
		return nil, nil, false
	}
	return b[:i], b[i+1:], true
}

// Errors that cross the seams. Verifiers, the limiter and the proxy
// return and test these values (errors.Is), never a renamed copy.
var (
	// ErrMalformed: the presented string is not a credential of its kind
	// (refused without a lookup).
	ErrMalformed = errors.New("access: malformed credential")
	// ErrInvalid: no such credential, or the secret does not match.
	ErrInvalid = errors.New("access: invalid credential")
	// ErrExpired: the credential has expired.
	ErrExpired = errors.New("access: credential expired")
	// ErrThrottled: the client address or user name failed to
	// authenticate too often; Principal.RetryAfter says when to retry.
	ErrThrottled = errors.New("access: too many failed authentications")
	// ErrUnsupported: no verifier for this kind of credential.
	ErrUnsupported = errors.New("access: credential kind not supported")
	// ErrStoreUnavailable: the credential store could not be reached to
	// verify a credential not held in memory.
	ErrStoreUnavailable = errors.New("access: credential store unavailable")
	// ErrLedgerUnavailable: the quota ledger could not be reached and the
	// outage policy refused the request.
	ErrLedgerUnavailable = errors.New("access: quota ledger unavailable")
	// ErrUnknownTenant: the credential's tenant has no limits (it was
	// deleted).
	ErrUnknownTenant = errors.New("access: unknown tenant")
)

// Reason names the limit that refused a request.
type Reason uint8

// Reasons.
const (
	ReasonNone Reason = iota
	ReasonQuota
	ReasonRate
	ReasonConcurrency
)

// String is the reason's problem code: the value of Tollgate-Shadow.
func (r Reason) String() string {
	switch r {
	case ReasonQuota:
		return "quota_exceeded"
	case ReasonRate:
		return "rate_limited"
	case ReasonConcurrency:
		return "concurrency_limited"
	}
	return ""
}

// Mode says whether a request's limits refuse it (enforce) or only say
// what they would have done (shadow). ModePlan takes the tenant's plan's.
type Mode uint8

// Modes of a route or plan.
const (
	ModePlan Mode = iota
	ModeEnforce
	ModeShadow
)

// Failure names an answer tollgate gives itself when the upstream fails,
// for a StatusSet that names it (refund_on: [upstream_timeout]).
type Failure uint8

// Upstream failures a StatusSet can name.
const (
	FailureNone        Failure = 0
	FailureUnreachable Failure = 1 << 0 // 502 upstream_unreachable
	FailureTimeout     Failure = 1 << 1 // 504 upstream_timeout
)

// StatusSet is a set of HTTP statuses (100–599), and of tollgate's own
// upstream failures, that an admitted request's answer may fall in: the
// answers refunded (refund_on). The zero set holds nothing.
type StatusSet struct {
	bits [10]uint64
	own  Failure
}

// AddStatus adds status (100–599) to the set.
func (s *StatusSet) AddStatus(status int) {
	if status >= 0 && status < 640 {
		s.bits[status>>6] |= 1 << (status & 63)
	}
}

// AddFailure adds tollgate's own answer f to the set.
func (s *StatusSet) AddFailure(f Failure) { s.own |= f }

// Has reports whether an answer of status, which tollgate gave itself
// for failure f (FailureNone for the upstream's own answer), is in s.
func (s *StatusSet) Has(status int, f Failure) bool {
	if s == nil {
		return false
	}
	if s.own&f != 0 {
		return true
	}
	return status >= 0 && status < 640 && s.bits[status>>6]&(1<<(status&63)) != 0
}

// Empty reports whether s holds nothing.
func (s *StatusSet) Empty() bool { return s == nil || *s == StatusSet{} }

// Rate is the state of a short-window rate limit.
type Rate struct {
	Limit      int64 // burst: requests allowed at once
	Window     int64 // seconds the limit is defined over
	Remaining  int64
	Reset      int64 // seconds until the bucket is full
	RetryAfter int64 // seconds until a refused request may be retried
}

// Decision is the limiter's answer to an admission, as the proxy uses it
// for its answer and its limit headers.
type Decision struct {
	Allowed bool
	// Unlimited is set for tenants without a monthly limit.
	Unlimited bool
	Limit     int64
	Remaining int64
	// Reset is the number of seconds until the period ends.
	Reset int64
	// Err is ErrLedgerUnavailable when the ledger could not be reached
	// and the request was refused for that reason, ErrUnknownTenant for a
	// tenant without a limit; nil otherwise.
	Err error
	// Reason names the limit that refused the request.
	Reason Reason
	// Rate is the short-window limit's state when HasRate is set.
	Rate    Rate
	HasRate bool
	// Acquired says a concurrency slot was taken: release it when the
	// request is done.
	Acquired bool
	// Open says the request was admitted on the open outage policy's
	// allowance while the ledger was unreachable.
	Open bool
	// PeriodEnd is the end of the period the decision was taken in, in
	// Unix nanoseconds, so that a refund can tell whether it still
	// applies.
	PeriodEnd int64
	// Shadow, on an admitted request of a route or plan in shadow mode,
	// names the limit that would have refused it (ReasonNone: none).
	Shadow Reason
	// Uncounted says the request was admitted in shadow mode past the
	// monthly limit: it holds no quota, and nothing is refunded for it.
	Uncounted bool
	// Overage is how many requests of the period the tenant was admitted
	// past its limit, as far as this replica knows, when its plan allows
	// overage (HasOverage); Remaining is then 0.
	Overage    int64
	HasOverage bool
	// RefundOn is the tenant's plan's refund_on: the answers of an
	// admitted request that are given back to its quota. nil: none.
	RefundOn *StatusSet
}
