package store

import (
	"encoding/json"
	"sort"
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
type TenantMirror struct {
	mu sync.RWMutex // protects m
	m  map[string]*Tenant
	// OnChange, if set, is called after a tenant changed (or all of them,
	// with id "", after a snapshot). It runs on the watcher's goroutine.
	OnChange func(id string)
}

// NewTenantMirror returns an empty mirror.
func NewTenantMirror() *TenantMirror { return &TenantMirror{m: map[string]*Tenant{}} }

// Snapshot implements Mirror.
func (tm *TenantMirror) Snapshot(entries map[string][]byte) {
	m := make(map[string]*Tenant, len(entries))
	for k, v := range entries {
		var t Tenant
		if json.Unmarshal(v, &t) == nil {
			m[k] = &t
		}
	}
	tm.mu.Lock()
	tm.m = m
	tm.mu.Unlock()
	if tm.OnChange != nil {
		tm.OnChange("")
	}
}

// Update implements Mirror.
func (tm *TenantMirror) Update(key string, value []byte) {
	var t *Tenant
	if value != nil {
		t = new(Tenant)
		if json.Unmarshal(value, t) != nil {
			return
		}
	}
	tm.Set(key, t)
}

// Set applies a change locally: t nil deletes. The admin API calls it
// after a successful write so its replica reads its own writes.
func (tm *TenantMirror) Set(id string, t *Tenant) {
	tm.mu.Lock()
	if t == nil {
		delete(tm.m, id)
	} else {
		tm.m[id] = t
	}
	tm.mu.Unlock()
	if tm.OnChange != nil {
		tm.OnChange(id)
	}
}

// Get returns the tenant with id, or nil. The result must not be modified.
func (tm *TenantMirror) Get(id string) *Tenant {
	tm.mu.RLock()
	defer tm.mu.RUnlock()
	return tm.m[id]
}

// List returns every tenant sorted by id.
func (tm *TenantMirror) List() []*Tenant {
	tm.mu.RLock()
	out := make([]*Tenant, 0, len(tm.m))
	for _, t := range tm.m {
		out = append(out, t)
	}
	tm.mu.RUnlock()
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out
}

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
}

// NewJSONMirror returns an empty mirror.
func NewJSONMirror[T any]() *JSONMirror[T] { return &JSONMirror[T]{m: map[string]*T{}} }

// Snapshot implements Mirror.
func (jm *JSONMirror[T]) Snapshot(entries map[string][]byte) {
	m := make(map[string]*T, len(entries))
	for k, v := range entries {
		var t T
		if json.Unmarshal(v, &t) == nil {
			m[k] = &t
		}
	}
	jm.mu.Lock()
	jm.m = m
	jm.mu.Unlock()
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
	defer jm.mu.Unlock()
	if t == nil {
		delete(jm.m, key)
	} else {
		jm.m[key] = t
	}
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
