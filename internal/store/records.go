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
