package store

import (
	"encoding/base64"
	"encoding/json"
	"strings"
	"sync"
	"time"
)

// Tenant is the record of one tenant in the tenants bucket.
type Tenant struct {
	ID     string           `json:"id"`
	Plan   string           `json:"plan"`
	Addons map[string]int64 `json:"addons,omitempty"`
	// Granted, when positive, replaces the plan's monthly limit (a granted
	// increase).
	Granted int64 `json:"granted,omitempty"`
	// AnchorDay is the first day of the tenant's billing period (1–31); 0
	// for calendar months.
	AnchorDay int       `json:"anchor_day,omitempty"`
	Created   time.Time `json:"created"`
	Updated   time.Time `json:"updated"`
}

// Key is the record of one credential in the keys bucket: an API key
// (stored under its id), an OAuth client (under "c." and its id) or a
// user (under "u." and the base64url of the user name); see
// CredentialKey. Secrets are never kept: an API key or client secret as
// its SHA-256 digest, a password as an argon2id hash.
type Key struct {
	ID string `json:"id"` // key id, client id or user name
	// Kind is "" or "api_key" for an API key, "client", "user" or
	// "token".
	Kind    string   `json:"kind,omitempty"`
	Tenant  string   `json:"tenant,omitempty"`  // the one tenant
	Tenants []string `json:"tenants,omitempty"` // or several
	Name    string   `json:"name"`
	Prefix  string   `json:"prefix,omitempty"` // displayable start of an API key
	Digest  string   `json:"digest,omitempty"` // hex SHA-256 of the whole key or secret
	// Password is a user's password as an argon2id hash (PHC string).
	Password string `json:"password,omitempty"`
	// Type is a user's type: "api_only" or "standard".
	Type string `json:"type,omitempty"`
	// Client and User are, for an access token, the client (or API key)
	// it was issued to and the user it acts for.
	Client string `json:"client,omitempty"`
	User   string `json:"user,omitempty"`
	// Scopes, Modules and Grants limit the credential; nil: all scopes,
	// every module, no grants.
	Scopes  []string `json:"scopes,omitempty"`
	Modules []string `json:"modules,omitempty"`
	Grants  []string `json:"grants,omitempty"`
	// TokenLifetime, on a client or API key, is how long the access
	// tokens issued to it live ("10m"), overriding its tenant's plan.
	TokenLifetime string `json:"token_lifetime,omitempty"`
	// Expires, when set, is when the credential stops working.
	Expires *time.Time `json:"expires,omitempty"`
	// PrevDigest is the digest of the secret a regeneration replaced,
	// which keeps working until PrevUntil (rotation with grace).
	PrevDigest string     `json:"prev_digest,omitempty"`
	PrevUntil  *time.Time `json:"prev_until,omitempty"`
	Created    time.Time  `json:"created"`
	Updated    *time.Time `json:"updated,omitempty"`
}

// Credential kinds as records name them.
const (
	KindAPIKey = "api_key"
	KindClient = "client"
	KindUser   = "user"
	// KindToken is an access token, in the tokens bucket under its id.
	KindToken = "token"
)

// CredentialKey returns the bucket key of the credential of kind with id:
// an API key's id as it is, "c." and a client id, "u." and the unpadded
// base64url of a user name (user names hold characters bucket keys may
// not).
func CredentialKey(kind, id string) string {
	switch kind {
	case KindClient:
		return "c." + id
	case KindUser:
		return "u." + base64.RawURLEncoding.EncodeToString([]byte(id))
	}
	return id
}

// ParseCredentialKey is the inverse of CredentialKey.
func ParseCredentialKey(key string) (kind, id string, ok bool) {
	switch {
	case strings.HasPrefix(key, "c."):
		return KindClient, key[2:], len(key) > 2
	case strings.HasPrefix(key, "u."):
		b, err := base64.RawURLEncoding.DecodeString(key[2:])
		return KindUser, string(b), err == nil && len(b) > 0
	}
	return KindAPIKey, key, !strings.Contains(key, ".")
}

// TenantMirror is an in-memory copy of the tenants bucket, kept by Watch.
type TenantMirror = JSONMirror[Tenant]

// NewTenantMirror returns an empty mirror.
func NewTenantMirror() *TenantMirror { return NewJSONMirror[Tenant]() }

// LimitRequest is a tenant's request for a higher monthly limit, kept in
// the limit-requests bucket under its id.
type LimitRequest struct {
	ID        string     `json:"id"`
	Tenant    string     `json:"tenant"`
	Requested int64      `json:"requested"`
	Granted   int64      `json:"granted"`
	Status    string     `json:"status"` // pending, granted, denied
	Reason    string     `json:"reason,omitempty"`
	Created   time.Time  `json:"created"`
	DecidedBy string     `json:"decided_by,omitempty"`
	DecidedAt *time.Time `json:"decided_at,omitempty"`
}

// Statuses of a limit request.
const (
	RequestPending = "pending"
	RequestGranted = "granted"
	RequestDenied  = "denied"
)

// JSONMirror is an in-memory copy of a bucket of JSON records, kept by
// Watch.
type JSONMirror[T any] struct {
	mu sync.RWMutex // protects m
	m  map[string]*T
	// staging is the state being loaded (Loader); only the watcher's
	// goroutine touches it.
	staging map[string]*T
	// OnChange, if set, is called after a record changed (or all of them,
	// with key "", after a snapshot). It runs on the caller's goroutine
	// (the watcher's, or the admin API's after a write).
	OnChange func(key string)
}

// NewJSONMirror returns an empty mirror.
func NewJSONMirror[T any]() *JSONMirror[T] { return &JSONMirror[T]{m: map[string]*T{}} }

// Snapshot implements Mirror, through the Loader methods.
func (jm *JSONMirror[T]) Snapshot(entries map[string][]byte) {
	jm.BeginLoad()
	for k, v := range entries {
		jm.Load(k, v)
	}
	jm.Loaded()
}

// BeginLoad implements Loader.
func (jm *JSONMirror[T]) BeginLoad() { jm.staging = map[string]*T{} }

// Load implements Loader.
func (jm *JSONMirror[T]) Load(key string, value []byte) {
	if value == nil {
		delete(jm.staging, key)
		return
	}
	t := new(T)
	if json.Unmarshal(value, t) == nil {
		jm.staging[key] = t
	}
}

// Loaded implements Loader.
func (jm *JSONMirror[T]) Loaded() {
	jm.mu.Lock()
	jm.m, jm.staging = jm.staging, nil
	jm.mu.Unlock()
	if jm.OnChange != nil {
		jm.OnChange("")
	}
}

// Update implements Mirror.
func (jm *JSONMirror[T]) Update(key string, value []byte) {
	var t *T
	if value != nil {
		t = new(T)
		if json.Unmarshal(value, t) != nil {
			return
		}
	}
	jm.Set(key, t)
}

// Set applies a change locally (nil deletes), for reading one's own writes.
func (jm *JSONMirror[T]) Set(key string, t *T) {
	jm.mu.Lock()
	if t == nil {
		delete(jm.m, key)
	} else {
		jm.m[key] = t
	}
	jm.mu.Unlock()
	if jm.OnChange != nil {
		jm.OnChange(key)
	}
}

// Len returns the number of records.
func (jm *JSONMirror[T]) Len() int {
	jm.mu.RLock()
	defer jm.mu.RUnlock()
	return len(jm.m)
}

// Get returns the record under key, or nil. It must not be modified.
func (jm *JSONMirror[T]) Get(key string) *T {
	jm.mu.RLock()
	defer jm.mu.RUnlock()
	return jm.m[key]
}

// List returns the records for which keep returns true (all if nil).
func (jm *JSONMirror[T]) List(keep func(*T) bool) []*T {
	jm.mu.RLock()
	defer jm.mu.RUnlock()
	out := make([]*T, 0, len(jm.m))
	for _, t := range jm.m {
		if keep == nil || keep(t) {
			out = append(out, t)
		}
	}
	return out
}
