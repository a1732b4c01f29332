package store_test

import (
	"context"
	"errors"
	"testing"

	"github.com/tollgate/tollgate/internal/store"
	"github.com/tollgate/tollgate/internal/store/storetest"
)

// TestGetAtLeader: a read at the stream's leader sees a record, its
// revision, and its deletion and purge as not found, like Get.
func TestGetAtLeader(t *testing.T) {
	s := storetest.Open(t)
	ctx := context.Background()
	type rec struct{ Name string }
	var got rec
	if _, err := s.GetAtLeader(ctx, s.Keys, "never", &got); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("never written: %v, want ErrNotFound", err)
	}
	rev, err := store.Create(ctx, s.Keys, "k1", rec{"a"})
	if err != nil {
		t.Fatal(err)
	}
	if r, err := s.GetAtLeader(ctx, s.Keys, "k1", &got); err != nil || r != rev || got.Name != "a" {
		t.Fatalf("created: %+v at %d, %v; want a at %d", got, r, err, rev)
	}
	rev, err = store.Update(ctx, s.Keys, "k1", rec{"b"}, rev)
	if err != nil {
		t.Fatal(err)
	}
	if r, err := s.GetAtLeader(ctx, s.Keys, "k1", &got); err != nil || r != rev || got.Name != "b" {
		t.Fatalf("updated: %+v at %d, %v; want b at %d", got, r, err, rev)
	}
	if err := store.Delete(ctx, s.Keys, "k1"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.GetAtLeader(ctx, s.Keys, "k1", &got); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("deleted: %v, want ErrNotFound", err)
	}
	if _, err := store.Create(ctx, s.Keys, "k2", rec{"c"}); err != nil {
		t.Fatal(err)
	}
	if err := s.Keys.Purge(ctx, "k2"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.GetAtLeader(ctx, s.Keys, "k2", &got); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("purged: %v, want ErrNotFound", err)
	}
	if _, err := store.Create(ctx, s.Keys, "k3", "not an object"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.GetAtLeader(ctx, s.Keys, "k3", &got); err == nil || errors.Is(err, store.ErrNotFound) {
		t.Fatalf("undecodable: %v, want a decode error", err)
	}
}
