package store

import (
	"encoding/json"
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

// Key is the record of one API key in the keys bucket, stored under its
// id. Only the SHA-256 digest of the key is kept.
type Key struct {
	ID      string    `json:"id"`
	Tenant  string    `json:"tenant"`
	Name    string    `json:"name"`
	Prefix  string    `json:"prefix"` // displayable start of the key
	Digest  string    `json:"digest"` // hex SHA-256 of the whole key
	Created time.Time `json:"created"`
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
