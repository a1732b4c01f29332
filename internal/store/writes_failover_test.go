package store_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/tollgate/tollgate/internal/store"
	"github.com/tollgate/tollgate/internal/store/storetest"
)

type record struct {
	V string `json:"v"`
}

// faultyKV is a real bucket whose calls can be made to fail: before each
// Get, Create, Update or Delete, fault (if set) is asked with the call's
// name and its number among calls of that name (from 1). A non-nil error
// is answered instead of the result; apply says whether the call is made
// on the bucket first all the same, which is an answer lost on its way
// back: the server applied the write, the caller got a timeout.
type faultyKV struct {
	jetstream.KeyValue
	calls map[string]int
	fault func(call string, n int) (apply bool, err error)
}

func newFaultyKV(kv jetstream.KeyValue, fault func(call string, n int) (bool, error)) *faultyKV {
	return &faultyKV{KeyValue: kv, calls: map[string]int{}, fault: fault}
}

func (f *faultyKV) inject(call string) (apply bool, err error) {
	f.calls[call]++
	if f.fault == nil {
		return true, nil
	}
	return f.fault(call, f.calls[call])
}

func (f *faultyKV) Get(ctx context.Context, key string) (jetstream.KeyValueEntry, error) {
	apply, err := f.inject("get")
	if err == nil {
		return f.KeyValue.Get(ctx, key)
	}
	if apply {
		_, _ = f.KeyValue.Get(ctx, key)
	}
	return nil, err
}

func (f *faultyKV) Create(ctx context.Context, key string, v []byte, opts ...jetstream.KVCreateOpt) (uint64, error) {
	apply, err := f.inject("create")
	if err == nil {
		return f.KeyValue.Create(ctx, key, v, opts...)
	}
	if apply {
		if _, aerr := f.KeyValue.Create(ctx, key, v, opts...); aerr != nil {
			return 0, fmt.Errorf("faultyKV: applying create: %w", aerr)
		}
	}
	return 0, err
}

func (f *faultyKV) Update(ctx context.Context, key string, v []byte, rev uint64) (uint64, error) {
	apply, err := f.inject("update")
	if err == nil {
		return f.KeyValue.Update(ctx, key, v, rev)
	}
	if apply {
		if _, aerr := f.KeyValue.Update(ctx, key, v, rev); aerr != nil {
			return 0, fmt.Errorf("faultyKV: applying update: %w", aerr)
		}
	}
	return 0, err
}

func (f *faultyKV) Delete(ctx context.Context, key string, opts ...jetstream.KVDeleteOpt) error {
	apply, err := f.inject("delete")
	if err == nil {
		return f.KeyValue.Delete(ctx, key, opts...)
	}
	if apply {
		if aerr := f.KeyValue.Delete(ctx, key, opts...); aerr != nil {
			return fmt.Errorf("faultyKV: applying delete: %w", aerr)
		}
	}
	return err
}

// once fails the first call named call with err, applying it first if
// apply; every other call goes through.
func once(call string, apply bool, err error) func(string, int) (bool, error) {
	return func(c string, n int) (bool, error) {
		if c == call && n == 1 {
			return apply, err
		}
		return true, nil
	}
}

// A write whose answer was lost is resolved by reading what is stored,
// never by assuming: the write really is applied on the first attempt (or
// really is not, and another writer's is), and the helper's retry must
// tell the two apart.
func TestWritesResolveUnknownOutcomeByReading(t *testing.T) {
	s := storetest.Open(t)
	ctx := context.Background()
	mine, theirs := record{V: "mine"}, record{V: "theirs"}
	put := func(t *testing.T, key string, v record) uint64 {
		t.Helper()
		rev, err := store.Create(ctx, s.Keys, key, v)
		if err != nil {
			t.Fatalf("create %s: %v", key, err)
		}
		return rev
	}
	read := func(key string) (record, uint64, error) {
		var r record
		rev, err := store.Get(ctx, s.Keys, key, &r)
		return r, rev, err
	}
	lost := context.DeadlineExceeded // what an attempt whose answer never came returns

	t.Run("create applied, answer lost: ours", func(t *testing.T) {
		kv := newFaultyKV(s.Keys, once("create", true, lost))
		rev, err := store.Create(ctx, kv, "c1", mine)
		if err != nil {
			t.Fatalf("Create = %v, want success: the first attempt created it", err)
		}
		got, grev, err := read("c1")
		if err != nil || got != mine || grev != rev {
			t.Errorf("stored %+v at %d (%v), want %+v at %d", got, grev, err, mine, rev)
		}
		if kv.calls["create"] != 2 {
			t.Errorf("%d create calls, want 2", kv.calls["create"])
		}
	})
	t.Run("create lost, another writer's value: exists", func(t *testing.T) {
		kv := newFaultyKV(s.Keys, func(c string, n int) (bool, error) {
			if c == "create" && n == 1 {
				put(t, "c2", theirs) // while our attempt's answer is lost
				return false, lost
			}
			return true, nil
		})
		if _, err := store.Create(ctx, kv, "c2", mine); !errors.Is(err, store.ErrExists) {
			t.Errorf("Create = %v, want ErrExists", err)
		}
		if got, _, _ := read("c2"); got != theirs {
			t.Errorf("stored %+v, want %+v", got, theirs)
		}
	})
	t.Run("create of a present key, every answer received: exists at once", func(t *testing.T) {
		put(t, "c3", mine)
		kv := newFaultyKV(s.Keys, nil)
		if _, err := store.Create(ctx, kv, "c3", mine); !errors.Is(err, store.ErrExists) {
			t.Errorf("Create = %v, want ErrExists (same bytes, but nothing of ours was in doubt)", err)
		}
		if kv.calls["create"] != 1 {
			t.Errorf("%d create calls, want 1", kv.calls["create"])
		}
	})
	t.Run("update applied, answer lost: ours", func(t *testing.T) {
		rev := put(t, "u1", theirs)
		kv := newFaultyKV(s.Keys, once("update", true, lost))
		n, err := store.Update(ctx, kv, "u1", mine, rev)
		if err != nil {
			t.Fatalf("Update = %v, want success: the first attempt updated it", err)
		}
		got, grev, err := read("u1")
		if err != nil || got != mine || grev != n || n <= rev {
			t.Errorf("stored %+v at %d (%v), Update returned %d; want %+v at a revision after %d", got, grev, err, n, mine, rev)
		}
	})
	t.Run("update lost, another writer's value: conflict", func(t *testing.T) {
		rev := put(t, "u2", theirs)
		kv := newFaultyKV(s.Keys, func(c string, n int) (bool, error) {
			if c == "update" && n == 1 {
				if _, err := s.Keys.Update(ctx, "u2", []byte(`{"v":"other"}`), rev); err != nil {
					t.Errorf("other writer: %v", err)
				}
				return false, lost
			}
			return true, nil
		})
		if _, err := store.Update(ctx, kv, "u2", mine, rev); !errors.Is(err, jetstream.ErrKeyRevisionMismatch) {
			t.Errorf("Update = %v, want a revision mismatch", err)
		}
		if got, _, _ := read("u2"); got.V != "other" {
			t.Errorf("stored %+v, want the other writer's", got)
		}
	})
	t.Run("update at a stale revision, every answer received: conflict at once", func(t *testing.T) {
		rev := put(t, "u3", theirs)
		if _, err := s.Keys.Update(ctx, "u3", []byte(`{"v":"mine"}`), rev); err != nil {
			t.Fatal(err)
		}
		kv := newFaultyKV(s.Keys, nil)
		if _, err := store.Update(ctx, kv, "u3", mine, rev); !errors.Is(err, jetstream.ErrKeyRevisionMismatch) {
			t.Errorf("Update = %v, want a revision mismatch (same bytes, but nothing of ours was in doubt)", err)
		}
		if kv.calls["update"] != 1 {
			t.Errorf("%d update calls, want 1", kv.calls["update"])
		}
	})
	t.Run("delete applied, answer lost: deleted", func(t *testing.T) {
		put(t, "d1", mine)
		kv := newFaultyKV(s.Keys, once("delete", true, lost))
		if err := store.Delete(ctx, kv, "d1"); err != nil {
			t.Fatalf("Delete = %v, want success: the first attempt deleted it", err)
		}
		if _, _, err := read("d1"); !errors.Is(err, store.ErrNotFound) {
			t.Errorf("read after Delete: %v, want ErrNotFound", err)
		}
	})
	t.Run("delete of an absent key: not found", func(t *testing.T) {
		if err := store.Delete(ctx, newFaultyKV(s.Keys, nil), "d2"); !errors.Is(err, store.ErrNotFound) {
			t.Errorf("Delete = %v, want ErrNotFound", err)
		}
	})
}

// Errors of one attempt that may go away by themselves are retried; the
// others are returned at once.
func TestRecordHelpersRetryTransientErrors(t *testing.T) {
	s := storetest.Open(t)
	ctx := context.Background()
	if _, err := store.Create(ctx, s.Keys, "k", record{V: "v"}); err != nil {
		t.Fatal(err)
	}
	for i, tc := range []struct {
		name  string
		err   error
		retry bool
	}{
		{"nats timeout", nats.ErrTimeout, true},
		{"no responders", nats.ErrNoResponders, true},
		{"no stream response", jetstream.ErrNoStreamResponse, true},
		{"attempt deadline", context.DeadlineExceeded, true},
		{"reconnecting", nats.ErrReconnectBufExceeded, true},
		{"503", &jetstream.APIError{Code: 503, Description: "unavailable"}, true},
		{"10008", &jetstream.APIError{Code: 500, ErrorCode: 10008, Description: "temporarily unavailable"}, true},
		{"10009", &jetstream.APIError{Code: 500, ErrorCode: 10009, Description: "no leader"}, true},
		{"caller canceled", context.Canceled, false},
		{"connection closed", nats.ErrConnectionClosed, false},
		{"bad request", &jetstream.APIError{Code: 400, ErrorCode: 10003, Description: "bad request"}, false},
	} {
		key := fmt.Sprintf("new%d", i)
		t.Run(tc.name, func(t *testing.T) {
			wrapped := fmt.Errorf("nats: %w", tc.err)
			for _, op := range []struct {
				call string
				do   func(kv jetstream.KeyValue) error
			}{
				{"get", func(kv jetstream.KeyValue) error {
					var r record
					_, err := store.Get(ctx, kv, "k", &r)
					return err
				}},
				{"create", func(kv jetstream.KeyValue) error {
					_, err := store.Create(ctx, kv, key, record{V: "v"})
					return err
				}},
			} {
				kv := newFaultyKV(s.Keys, once(op.call, false, wrapped))
				err := op.do(kv)
				switch {
				case tc.retry && err != nil:
					t.Errorf("%s: %v, want success on the second attempt", op.call, err)
				case !tc.retry && !errors.Is(err, tc.err):
					t.Errorf("%s: %v, want %v at once", op.call, err, tc.err)
				}
				if want := map[bool]int{true: 2, false: 1}[tc.retry]; kv.calls[op.call] != want {
					t.Errorf("%s: %d calls, want %d", op.call, kv.calls[op.call], want)
				}
			}
		})
	}
}

// The caller's context bounds the retries, and the client going away
// ends them at once.
func TestRecordHelpersStopWithTheirContext(t *testing.T) {
	s := storetest.Open(t)
	down := newFaultyKV(s.Keys, func(string, int) (bool, error) { return false, nats.ErrNoResponders })
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	start := time.Now()
	var r record
	if _, err := store.Get(ctx, down, "k", &r); !errors.Is(err, nats.ErrNoResponders) {
		t.Errorf("Get = %v, want no responders", err)
	}
	if took := time.Since(start); took > 2*time.Second {
		t.Errorf("Get took %v under a 300ms context", took)
	}
	if down.calls["get"] < 2 {
		t.Errorf("%d attempts in 300ms, want retries", down.calls["get"])
	}

	ctx, cancel = context.WithCancel(context.Background())
	gone := newFaultyKV(s.Keys, func(string, int) (bool, error) {
		cancel() // the client went away during the first attempt
		return false, nats.ErrNoResponders
	})
	if _, err := store.Create(ctx, gone, "k", record{V: "v"}); err == nil {
		t.Error("Create succeeded after its context was canceled")
	}
	if gone.calls["create"] != 1 {
		t.Errorf("%d attempts after the context was canceled, want 1", gone.calls["create"])
	}
}

// TestWritesThroughLeaderStop (issue 14, item 4): admin writes through the
// record helpers must succeed while the keys bucket's stream elects a new
// leader, instead of answering 503 for seconds. The stream's leader is
// stopped, and at once two clients create, update and delete records: one
// that was connected to the stopped node (it must reconnect elsewhere),
// and one connected to another node.
func TestWritesThroughLeaderStop(t *testing.T) {
	if testing.Short() {
		t.Skip("cluster failover test")
	}
	const (
		nodes  = 3
		stream = "KV_" + store.BucketKeys
		// globalAccount is the account of a server without accounts.
		globalAccount = "$G"
	)
	c := storetest.StartCluster(t, nodes)
	open := c.Open
	first := open(c.URL(), "setup")
	// The stream's leader once every node is healthy: its streams current.
	leader := -1
	storetest.CheckFor(t, 20*time.Second, 5*time.Millisecond, func() error {
		leader = -1
		for i := range nodes {
			ns := c.Server(i)
			if h := ns.Healthz(nil); h.Status != "ok" {
				return fmt.Errorf("n%d: %s", i, h.Error)
			}
			if ns.JetStreamIsStreamLeader(globalAccount, stream) {
				leader = i
			}
		}
		if leader < 0 {
			return errors.New("stream has no leader")
		}
		return nil
	})
	ictx, icancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer icancel()
	st, err := first.JS.Stream(ictx, stream)
	if err != nil {
		t.Fatal(err)
	}
	if info, err := st.Info(ictx); err != nil || info.Cluster == nil || info.Cluster.Leader != fmt.Sprintf("n%d", leader) {
		t.Fatalf("stream info %+v (%v), want leader n%d", info, err, leader)
	}
	other := (leader + 1) % nodes
	clients := []struct {
		name string
		s    *store.Store
	}{
		{"on the leader", open(c.NodeURL(leader), "on-leader")},
		{"on a follower", open(c.NodeURL(other), "on-follower")},
	}
	for i, cl := range clients {
		want := []string{fmt.Sprintf("n%d", leader), fmt.Sprintf("n%d", other)}[i]
		if got := cl.s.NC.ConnectedServerName(); got != want {
			t.Fatalf("client %s is connected to %s, want %s", cl.name, got, want)
		}
		// It must know the other nodes (from the cluster's INFO) to
		// reconnect to one of them.
		storetest.CheckFor(t, 5*time.Second, 5*time.Millisecond, func() error {
			if n := len(cl.s.NC.Servers()); n < nodes {
				return fmt.Errorf("client %s knows %d servers", cl.name, n)
			}
			return nil
		})
	}

	// Each client's records: one to update, one to delete, one to create.
	revs := make([]uint64, len(clients))
	for i, cl := range clients {
		ctx, cancel := cl.s.WriteCtx(context.Background())
		var err error
		if revs[i], err = store.Create(ctx, cl.s.Keys, fmt.Sprintf("upd%d", i), record{V: "old"}); err != nil {
			t.Fatal(err)
		}
		if _, err = store.Create(ctx, cl.s.Keys, fmt.Sprintf("del%d", i), record{V: "old"}); err != nil {
			t.Fatal(err)
		}
		cancel()
	}

	type result struct {
		what string
		took time.Duration
		err  error
	}
	var (
		wg      sync.WaitGroup
		mu      sync.Mutex
		results []result
		newRevs = make([]uint64, len(clients))
	)
	stopped := time.Now()
	c.Stop(leader)
	for i, cl := range clients {
		run := func(what string, op func(ctx context.Context) error) {
			wg.Go(func() {
				ctx, cancel := cl.s.WriteCtx(context.Background())
				defer cancel()
				start := time.Now()
				err := op(ctx)
				mu.Lock()
				defer mu.Unlock()
				results = append(results, result{fmt.Sprintf("%s by the client %s", what, cl.name), time.Since(start), err})
			})
		}
		run("create", func(ctx context.Context) error {
			_, err := store.Create(ctx, cl.s.Keys, fmt.Sprintf("new%d", i), record{V: "new"})
			return err
		})
		run("update", func(ctx context.Context) error {
			var err error
			newRevs[i], err = store.Update(ctx, cl.s.Keys, fmt.Sprintf("upd%d", i), record{V: "updated"}, revs[i])
			return err
		})
		run("delete", func(ctx context.Context) error {
			return store.Delete(ctx, cl.s.Keys, fmt.Sprintf("del%d", i))
		})
	}
	wg.Wait()
	t.Logf("stopped the keys stream's leader n%d; all writes done %v later", leader, time.Since(stopped).Round(time.Millisecond))
	for _, r := range results {
		t.Logf("%s: %v (%v)", r.what, r.took.Round(time.Millisecond), r.err)
		if r.err != nil {
			t.Errorf("%s failed after %v: %v", r.what, r.took.Round(time.Millisecond), r.err)
		}
	}
	if t.Failed() {
		return
	}

	// Read back through the client that stayed connected. A read may be
	// served by a replica a little behind the leader: poll.
	reader := clients[1].s
	storetest.CheckFor(t, 10*time.Second, 10*time.Millisecond, func() error {
		ctx, cancel := reader.WriteCtx(context.Background())
		defer cancel()
		for i := range clients {
			var r record
			if _, err := store.Get(ctx, reader.Keys, fmt.Sprintf("new%d", i), &r); err != nil || r.V != "new" {
				return fmt.Errorf("new%d = %+v (%v), want created", i, r, err)
			}
			r = record{}
			rev, err := store.Get(ctx, reader.Keys, fmt.Sprintf("upd%d", i), &r)
			if err != nil || r.V != "updated" || rev != newRevs[i] {
				return fmt.Errorf("upd%d = %+v at %d (%v), want updated at %d", i, r, rev, err, newRevs[i])
			}
			if _, err := store.Get(ctx, reader.Keys, fmt.Sprintf("del%d", i), &r); !errors.Is(err, store.ErrNotFound) {
				return fmt.Errorf("del%d: %v, want deleted", i, err)
			}
		}
		return nil
	})
}
