package authn

import (
	"context"
	"encoding/base64"
	"errors"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/crypto/argon2"
)

// smallArgon2 keeps the tests fast: one pass over 64 KiB.
var smallArgon2 = Argon2Params{Time: 1, Memory: 64, Threads: 1}

// refVectors are argon2id hashes from the reference implementation's test
// suite (phc-winner-argon2, src/test.c), all of the password "password";
// the last costs 64 MiB.
var refVectors = []string{
	"$argon2id$v=19$m=256,t=2,p=1$c29tZXNhbHQ$nf65EOgLrQMR/uIPnA4rEsF5h7TKyQwu9U1bMCHGi/4",
	"$argon2id$v=19$m=256,t=2,p=2$c29tZXNhbHQ$bQk8UB/VmZZF4Oo79iDXuL5/0ttZwg2f/5U52iv1cDc",
	"$argon2id$v=19$m=65536,t=2,p=1$c29tZXNhbHQ$CTFhFdXPJO1aFaMaO6Mm5c8y7cJHAph8ArZWb2GRPPc",
}

func TestHasherRoundTrip(t *testing.T) {
	h := NewHasher(smallArgon2, 0)
	ctx := context.Background()
	phc, err := h.Hash(ctx, []byte("correct horse"))
	if err != nil {
		t.Fatalf("Hash: %v", err)
	}
	if want := "$argon2id$v=19$m=64,t=1,p=1$"; !strings.HasPrefix(phc, want) {
		t.Errorf("Hash = %q, want prefix %q", phc, want)
	}
	ok, err := h.Check(ctx, phc, []byte("correct horse"))
	if err != nil || !ok {
		t.Errorf("Check(right password) = %v, %v; want true, nil", ok, err)
	}
	ok, err = h.Check(ctx, phc, []byte("correct horsf"))
	if err != nil || ok {
		t.Errorf("Check(wrong password) = %v, %v; want false, nil", ok, err)
	}
	ok, err = h.Check(ctx, phc, nil)
	if err != nil || ok {
		t.Errorf("Check(empty password) = %v, %v; want false, nil", ok, err)
	}
	again, err := h.Hash(ctx, []byte("correct horse"))
	if err != nil {
		t.Fatalf("Hash: %v", err)
	}
	if again == phc {
		t.Errorf("two hashes of one password are both %q: the salt is not random", phc)
	}
}

// TestHasherFormat parses what Hash wrote by hand and recomputes the tag
// with argon2.IDKey: the string says what was done.
func TestHasherFormat(t *testing.T) {
	p := Argon2Params{Time: 2, Memory: 96, Threads: 3}
	phc, err := NewHasher(p, 1).Hash(context.Background(), []byte("pw"))
	if err != nil {
		t.Fatal(err)
	}
	f := strings.Split(phc, "$")
	if len(f) != 6 || f[0] != "" || f[1] != "argon2id" || f[2] != "v=19" || f[3] != "m=96,t=2,p=3" {
		t.Fatalf("Hash = %q, want $argon2id$v=19$m=96,t=2,p=3$<salt>$<tag>", phc)
	}
	if strings.Contains(f[4]+f[5], "=") {
		t.Errorf("Hash = %q: base64 is padded", phc)
	}
	salt, err := base64.RawStdEncoding.DecodeString(f[4])
	if err != nil || len(salt) != 16 {
		t.Fatalf("salt %q: %d bytes, %v; want 16 bytes of unpadded base64", f[4], len(salt), err)
	}
	tag, err := base64.RawStdEncoding.DecodeString(f[5])
	if err != nil || len(tag) != 32 {
		t.Fatalf("tag %q: %d bytes, %v; want 32 bytes of unpadded base64", f[5], len(tag), err)
	}
	if want := argon2.IDKey([]byte("pw"), salt, 2, 96, 3, 32); string(tag) != string(want) {
		t.Errorf("tag = %x, want argon2.IDKey's %x", tag, want)
	}
}

// TestHasherForeignHash checks hashes not made by Hash: the reference
// implementation's test vectors, and one formatted by hand.
func TestHasherForeignHash(t *testing.T) {
	h := NewHasher(smallArgon2, 0)
	ctx := context.Background()
	for i, phc := range refVectors {
		if i == len(refVectors)-1 && testing.Short() {
			break // 64 MiB
		}
		if ok, err := h.Check(ctx, phc, []byte("password")); err != nil || !ok {
			t.Errorf("Check(%q, password) = %v, %v; want true, nil", phc, ok, err)
		}
		if i == 0 {
			if ok, err := h.Check(ctx, phc, []byte("passwore")); err != nil || ok {
				t.Errorf("Check(%q, passwore) = %v, %v; want false, nil", phc, ok, err)
			}
		}
		if !h.NeedsRehash(phc) {
			t.Errorf("NeedsRehash(%q) = false, want true (other parameters)", phc)
		}
	}
	// A 12-byte salt and a 20-byte tag: lengths are the hash's own.
	salt := []byte("twelve bytes")
	tag := argon2.IDKey([]byte("s3cret"), salt, 3, 32, 2, 20)
	phc := "$argon2id$v=19$m=32,t=3,p=2$" + base64.RawStdEncoding.EncodeToString(salt) + "$" + base64.RawStdEncoding.EncodeToString(tag)
	if ok, err := h.Check(ctx, phc, []byte("s3cret")); err != nil || !ok {
		t.Errorf("Check(%q) = %v, %v; want true, nil", phc, ok, err)
	}
}

func TestHasherDefaults(t *testing.T) {
	h := NewHasher(Argon2Params{}, 0)
	if h.p != DefaultArgon2 {
		t.Errorf("NewHasher(zero params) has %+v, want DefaultArgon2 %+v", h.p, DefaultArgon2)
	}
	if got, want := cap(h.slots), runtime.GOMAXPROCS(0); got != want {
		t.Errorf("NewHasher(_, 0) has %d slots, want GOMAXPROCS %d", got, want)
	}
	if got := cap(NewHasher(smallArgon2, 3).slots); got != 3 {
		t.Errorf("NewHasher(_, 3) has %d slots, want 3", got)
	}
}

func TestNewHasherPanicsOnBadParams(t *testing.T) {
	for _, p := range []Argon2Params{
		{Time: 0, Memory: 64, Threads: 1},
		{Time: 101, Memory: 64, Threads: 1},
		{Time: 1, Memory: 64, Threads: 0},
		{Time: 1, Memory: 4<<20 + 1, Threads: 1},
		{Time: 1, Memory: 31, Threads: 4},
	} {
		func() {
			defer func() {
				if recover() == nil {
					t.Errorf("NewHasher(%+v) did not panic", p)
				}
			}()
			NewHasher(p, 1)
		}()
	}
}

func TestHasherNeedsRehash(t *testing.T) {
	ctx := context.Background()
	small := NewHasher(smallArgon2, 1)
	phc, err := small.Hash(ctx, []byte("pw"))
	if err != nil {
		t.Fatal(err)
	}
	if small.NeedsRehash(phc) {
		t.Errorf("NeedsRehash of its own hash %q = true, want false", phc)
	}
	for _, p := range []Argon2Params{
		{Time: 2, Memory: 64, Threads: 1},
		{Time: 1, Memory: 128, Threads: 1},
		{Time: 1, Memory: 64, Threads: 2},
		DefaultArgon2,
	} {
		if !NewHasher(p, 1).NeedsRehash(phc) {
			t.Errorf("hasher with %+v: NeedsRehash(%q) = false, want true", p, phc)
		}
	}
	if !small.NeedsRehash("$argon2id$v=19$m=64,t=1,p=1$c29tZXNhbHQ$nf65EOgLrQMR/uIPnA4rEsF5h7TKyQwu9U1bMCHGi/4") {
		t.Error("NeedsRehash of an 8-byte salt = false, want true")
	}
	if !small.NeedsRehash("") || !small.NeedsRehash("$argon2i$v=19$m=64,t=1,p=1$c29tZXNhbHQ$nf65EOgLrQMR/uIPnA4rEsF5h7TKyQwu9U1bMCHGi/4") {
		t.Error("NeedsRehash of a malformed hash = false, want true")
	}
}

// malformedPHCs are strings that Check must refuse with ErrBadHash.
var malformedPHCs = []string{
	"",
	"$",
	"password",
	"$argon2id",
	"$argon2id$",
	"$argon2id$v=19",
	"$argon2id$v=19$",
	"$argon2id$v=19$m=64,t=1,p=1",
	"$argon2id$v=19$m=64,t=1,p=1$",
	"$argon2id$v=19$m=64,t=1,p=1$c29tZXNhbHQ",
	"$argon2id$v=19$m=64,t=1,p=1$c29tZXNhbHQ$",
	"$argon2id$v=19$m=64,t=1,p=1$$nf65EOgLrQMR/uIPnA4rEsF5h7TKyQwu9U1bMCHGi/4",
	// Other algorithms, versions, spellings.
	"$argon2i$v=19$m=256,t=2,p=1$c29tZXNhbHQ$nf65EOgLrQMR/uIPnA4rEsF5h7TKyQwu9U1bMCHGi/4",
	"$argon2d$v=19$m=256,t=2,p=1$c29tZXNhbHQ$nf65EOgLrQMR/uIPnA4rEsF5h7TKyQwu9U1bMCHGi/4",
	"$ARGON2ID$v=19$m=256,t=2,p=1$c29tZXNhbHQ$nf65EOgLrQMR/uIPnA4rEsF5h7TKyQwu9U1bMCHGi/4",
	"$argon2id$v=16$m=256,t=2,p=1$c29tZXNhbHQ$nf65EOgLrQMR/uIPnA4rEsF5h7TKyQwu9U1bMCHGi/4",
	"$argon2id$v=20$m=256,t=2,p=1$c29tZXNhbHQ$nf65EOgLrQMR/uIPnA4rEsF5h7TKyQwu9U1bMCHGi/4",
	"$argon2id$v=019$m=256,t=2,p=1$c29tZXNhbHQ$nf65EOgLrQMR/uIPnA4rEsF5h7TKyQwu9U1bMCHGi/4",
	"$argon2id$m=256,t=2,p=1$c29tZXNhbHQ$nf65EOgLrQMR/uIPnA4rEsF5h7TKyQwu9U1bMCHGi/4",
	"argon2id$v=19$m=256,t=2,p=1$c29tZXNhbHQ$nf65EOgLrQMR/uIPnA4rEsF5h7TKyQwu9U1bMCHGi/4",
	"$2b$10$N9qo8uLOickgx2ZMRZoMyeIjZAgcfl7p92ldGxad68LJZdL17lhWy",
	// Parameters: order, names, numbers.
	"$argon2id$v=19$t=2,m=256,p=1$c29tZXNhbHQ$nf65EOgLrQMR/uIPnA4rEsF5h7TKyQwu9U1bMCHGi/4",
	"$argon2id$v=19$m=256,t=2$c29tZXNhbHQ$nf65EOgLrQMR/uIPnA4rEsF5h7TKyQwu9U1bMCHGi/4",
	"$argon2id$v=19$m=256,t=2,p=1,k=1$c29tZXNhbHQ$nf65EOgLrQMR/uIPnA4rEsF5h7TKyQwu9U1bMCHGi/4",
	"$argon2id$v=19$m=256, t=2,p=1$c29tZXNhbHQ$nf65EOgLrQMR/uIPnA4rEsF5h7TKyQwu9U1bMCHGi/4",
	"$argon2id$v=19$m=,t=2,p=1$c29tZXNhbHQ$nf65EOgLrQMR/uIPnA4rEsF5h7TKyQwu9U1bMCHGi/4",
	"$argon2id$v=19$m=0256,t=2,p=1$c29tZXNhbHQ$nf65EOgLrQMR/uIPnA4rEsF5h7TKyQwu9U1bMCHGi/4",
	"$argon2id$v=19$m=+256,t=2,p=1$c29tZXNhbHQ$nf65EOgLrQMR/uIPnA4rEsF5h7TKyQwu9U1bMCHGi/4",
	"$argon2id$v=19$m=-256,t=2,p=1$c29tZXNhbHQ$nf65EOgLrQMR/uIPnA4rEsF5h7TKyQwu9U1bMCHGi/4",
	"$argon2id$v=19$m=0x100,t=2,p=1$c29tZXNhbHQ$nf65EOgLrQMR/uIPnA4rEsF5h7TKyQwu9U1bMCHGi/4",
	"$argon2id$v=19$m=4294967296,t=2,p=1$c29tZXNhbHQ$nf65EOgLrQMR/uIPnA4rEsF5h7TKyQwu9U1bMCHGi/4",
	"$argon2id$v=19$m=99999999999999999999999,t=2,p=1$c29tZXNhbHQ$nf65EOgLrQMR/uIPnA4rEsF5h7TKyQwu9U1bMCHGi/4",
	"$argon2id$v=19$m=256,t=4294967297,p=1$c29tZXNhbHQ$nf65EOgLrQMR/uIPnA4rEsF5h7TKyQwu9U1bMCHGi/4",
	"$argon2id$v=19$m=256,t=2,p=257$c29tZXNhbHQ$nf65EOgLrQMR/uIPnA4rEsF5h7TKyQwu9U1bMCHGi/4",
	// Absurd parameters.
	"$argon2id$v=19$m=4194305,t=2,p=1$c29tZXNhbHQ$nf65EOgLrQMR/uIPnA4rEsF5h7TKyQwu9U1bMCHGi/4",
	"$argon2id$v=19$m=4294967295,t=2,p=1$c29tZXNhbHQ$nf65EOgLrQMR/uIPnA4rEsF5h7TKyQwu9U1bMCHGi/4",
	"$argon2id$v=19$m=256,t=101,p=1$c29tZXNhbHQ$nf65EOgLrQMR/uIPnA4rEsF5h7TKyQwu9U1bMCHGi/4",
	"$argon2id$v=19$m=256,t=0,p=1$c29tZXNhbHQ$nf65EOgLrQMR/uIPnA4rEsF5h7TKyQwu9U1bMCHGi/4",
	"$argon2id$v=19$m=256,t=2,p=0$c29tZXNhbHQ$nf65EOgLrQMR/uIPnA4rEsF5h7TKyQwu9U1bMCHGi/4",
	"$argon2id$v=19$m=0,t=2,p=1$c29tZXNhbHQ$nf65EOgLrQMR/uIPnA4rEsF5h7TKyQwu9U1bMCHGi/4",
	"$argon2id$v=19$m=31,t=2,p=4$c29tZXNhbHQ$nf65EOgLrQMR/uIPnA4rEsF5h7TKyQwu9U1bMCHGi/4",
	// Salt and tag.
	"$argon2id$v=19$m=256,t=2,p=1$c29tZXNhbA$nf65EOgLrQMR/uIPnA4rEsF5h7TKyQwu9U1bMCHGi/4",              // 7-byte salt
	"$argon2id$v=19$m=256,t=2,p=1$c29tZXNhbHQ$nf65",                                                    // 3-byte tag
	"$argon2id$v=19$m=256,t=2,p=1$c29tZXNhbHQ=$nf65EOgLrQMR/uIPnA4rEsF5h7TKyQwu9U1bMCHGi/4",            // padded
	"$argon2id$v=19$m=256,t=2,p=1$c29tZXNhbHQ$nf65EOgLrQMR/uIPnA4rEsF5h7TKyQwu9U1bMCHGi/4=",            // padded
	"$argon2id$v=19$m=256,t=2,p=1$c29tZXNhbHR$nf65EOgLrQMR/uIPnA4rEsF5h7TKyQwu9U1bMCHGi/4",             // non-zero spare bits
	"$argon2id$v=19$m=256,t=2,p=1$c29tZXNhbHQ$nf65EOgLrQMR_uIPnA4rEsF5h7TKyQwu9U1bMCHGi_4",             // URL alphabet
	"$argon2id$v=19$m=256,t=2,p=1$c29tZXNh\nbHQ$nf65EOgLrQMR/uIPnA4rEsF5h7TKyQwu9U1bMCHGi/4",           // line break
	"$argon2id$v=19$m=256,t=2,p=1$c29tZXNhbHQ$nf65EOgLrQMR/uIPnA4rEsF5h7TKyQwu9U1bMCHGi/4$",            // trailing field
	"$argon2id$v=19$m=256,t=2,p=1$c29tZXNhbHQ$nf65EOgLrQMR/uIPnA4rEsF5h7TKyQwu9U1bMCHGi/4 ",            // trailing space
	"$argon2id$v=19$m=256,t=2,p=1$c29tZXNhbHQ$nf65EOgLrQMR/uIPnA4rEsF5h7TKyQwu9U1bMCHGi/4AA",           // 4n+1 characters
	"$argon2id$v=19$m=256,t=2,p=1$c29tZXNhbHQ$" + strings.Repeat("A", 1400),                            // tag over 1 KiB
	"$argon2id$v=19$m=256,t=2,p=1$data=c29tZQ$c29tZXNhbHQ$nf65EOgLrQMR/uIPnA4rEsF5h7TKyQwu9U1bMCHGi/4", // associated data
	"$argon2id$v=19$m=256,t=2,p=1$c29tZXNhbHQ$nf65EOgLrQMR/uIPnA4rEsF5h7TKyQwu9U1bMCHGi/\xff",
}

func TestHasherCheckMalformed(t *testing.T) {
	h := NewHasher(smallArgon2, 1)
	h.key = func([]byte, []byte, uint32, uint32, uint8, uint32) []byte {
		t.Error("a malformed hash was computed")
		return nil
	}
	for _, phc := range malformedPHCs {
		ok, err := h.Check(context.Background(), phc, []byte("password"))
		if ok || !errors.Is(err, ErrBadHash) {
			t.Errorf("Check(%q) = %v, %v; want false, ErrBadHash", phc, ok, err)
		}
	}
}

func TestHasherCheckBounds(t *testing.T) {
	// The largest accepted parameters parse (they are not computed).
	for _, phc := range []string{
		"$argon2id$v=19$m=4194304,t=100,p=255$c29tZXNhbHQ$nf65EA",
		"$argon2id$v=19$m=2040,t=1,p=255$c29tZXNhbHQ$nf65EA",
		"$argon2id$v=19$m=8,t=1,p=1$" + strings.Repeat("A", 1366) + "$" + strings.Repeat("A", 1366),
	} {
		if _, err := parsePHC(phc); err != nil {
			t.Errorf("parsePHC(%q) = %v, want nil", phc[:min(len(phc), 60)], err)
		}
	}
}

// TestHasherSlots counts the hashes running at once: never more than the
// slots, and as many as the slots when the callers are there.
func TestHasherSlots(t *testing.T) {
	for _, slots := range []int{1, 3} {
		h := NewHasher(smallArgon2, slots)
		phc, err := h.Hash(context.Background(), []byte("pw"))
		if err != nil {
			t.Fatal(err)
		}
		var running, most atomic.Int32
		all := make(chan struct{}) // closed when slots hashes are running
		var once sync.Once
		h.key = func(password, salt []byte, passes, memory uint32, threads uint8, keyLen uint32) []byte {
			n := running.Add(1)
			defer running.Add(-1)
			for m := most.Load(); n > m && !most.CompareAndSwap(m, n); m = most.Load() {
			}
			if n == int32(slots) {
				once.Do(func() { close(all) })
			}
			// Wait until slots of them run at once, so that an unbounded
			// hasher would be seen running more.
			select {
			case <-all:
			case <-timeAfter(t, 10):
				t.Errorf("slots=%d: %d hashes never ran at once", slots, slots)
			}
			time.Sleep(time.Millisecond) // room for a caller over the bound to come in
			return argon2.IDKey(password, salt, passes, memory, threads, keyLen)
		}
		var wg sync.WaitGroup
		for range 4 * slots {
			wg.Go(func() {
				if ok, err := h.Check(context.Background(), phc, []byte("pw")); !ok || err != nil {
					t.Errorf("Check = %v, %v; want true, nil", ok, err)
				}
			})
		}
		wg.Wait()
		if got := most.Load(); got != int32(slots) {
			t.Errorf("slots=%d: at most %d hashes ran at once, want %d", slots, got, slots)
		}
	}
}

// timeAfter is a timer for a test's deadlocks, stopped when the test ends.
func timeAfter(t *testing.T, seconds int) <-chan time.Time {
	tm := time.NewTimer(time.Duration(seconds) * time.Second)
	t.Cleanup(func() { tm.Stop() })
	return tm.C
}

func TestHasherWaitEndsWithContext(t *testing.T) {
	h := NewHasher(smallArgon2, 1)
	entered, release := make(chan struct{}), make(chan struct{})
	h.key = func(password, salt []byte, passes, memory uint32, threads uint8, keyLen uint32) []byte {
		close(entered)
		<-release
		return argon2.IDKey(password, salt, passes, memory, threads, keyLen)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		if _, err := h.Hash(context.Background(), []byte("pw")); err != nil {
			t.Errorf("Hash: %v", err)
		}
	}()
	<-entered // the one slot is taken until release

	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	if _, err := h.Hash(ctx, []byte("pw")); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Hash waiting for a slot past its deadline = %v, want DeadlineExceeded", err)
	}
	ctx, cancel = context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() {
		_, err := h.Check(ctx, refVectors[0], []byte("password"))
		errc <- err
	}()
	cancel()
	if err := <-errc; !errors.Is(err, context.Canceled) {
		t.Errorf("Check cancelled while waiting for a slot = %v, want Canceled", err)
	}
	close(release)
	<-done
	// A context already ended costs no hash even with a slot free.
	h.key = func([]byte, []byte, uint32, uint32, uint8, uint32) []byte {
		t.Error("hash computed for an ended context")
		return nil
	}
	if _, err := h.Check(ctx, refVectors[0], []byte("password")); !errors.Is(err, context.Canceled) {
		t.Errorf("Check with a cancelled context = %v, want Canceled", err)
	}
}

func TestHasherCheckAbsent(t *testing.T) {
	h := NewHasher(smallArgon2, 1)
	var calls []Argon2Params
	var keyLens []uint32
	h.key = func(password, salt []byte, passes, memory uint32, threads uint8, keyLen uint32) []byte {
		calls = append(calls, Argon2Params{Time: passes, Memory: memory, Threads: threads})
		keyLens = append(keyLens, keyLen)
		if len(salt) != 16 {
			t.Errorf("CheckAbsent hashed with a %d-byte salt, want 16", len(salt))
		}
		return argon2.IDKey(password, salt, passes, memory, threads, keyLen)
	}
	h.CheckAbsent(context.Background(), []byte("pw"))
	h.CheckAbsent(context.Background(), []byte("pw"))
	if len(calls) != 2 || calls[0] != smallArgon2 || calls[1] != smallArgon2 || keyLens[0] != 32 {
		t.Errorf("two CheckAbsent computed %v (tags %v), want two hashes with %+v (32 bytes)", calls, keyLens, smallArgon2)
	}
	if h.NeedsRehash(h.dummy) {
		t.Errorf("the dummy hash %q is not one h makes", h.dummy)
	}
	// The dummy is a hash of no password, not even the empty one.
	if ok, err := h.Check(context.Background(), h.dummy, nil); ok || err != nil {
		t.Errorf("Check(dummy, empty) = %v, %v; want false, nil", ok, err)
	}
}

// FuzzCheckMalformed feeds parsePHC and Check arbitrary strings: never a
// panic, ErrBadHash for what is refused, and what is accepted is exactly
// what formatPHC writes and checks without error.
func FuzzCheckMalformed(f *testing.F) {
	h := NewHasher(smallArgon2, 1)
	for _, p := range []Argon2Params{smallArgon2, {Time: 2, Memory: 16, Threads: 2}} {
		phc, err := NewHasher(p, 1).Hash(context.Background(), []byte("pw"))
		if err != nil {
			f.Fatal(err)
		}
		f.Add(phc)
	}
	f.Add(refVectors[0])
	f.Add(refVectors[1])
	for _, s := range malformedPHCs {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		ph, err := parsePHC(s)
		if err != nil {
			if !errors.Is(err, ErrBadHash) {
				t.Fatalf("parsePHC(%q) = %v, not ErrBadHash", s, err)
			}
			if ok, err := h.Check(context.Background(), s, []byte("pw")); ok || !errors.Is(err, ErrBadHash) {
				t.Fatalf("Check(%q) = %v, %v; want false, ErrBadHash", s, ok, err)
			}
			return
		}
		if got := formatPHC(ph.p, ph.salt, ph.tag); got != s {
			t.Fatalf("parsePHC accepted %q, which formats back as %q", s, got)
		}
		if ph.p.Memory > 1<<10 || ph.p.Time > 4 {
			return // too slow to compute here
		}
		if _, err := h.Check(context.Background(), s, []byte("pw")); err != nil {
			t.Fatalf("Check(%q) = %v, want no error", s, err)
		}
	})
}

// BenchmarkHasherCheck is the cost of a password check that is not
// memoised: with DefaultArgon2 it is most of a Basic request's.
func BenchmarkHasherCheck(b *testing.B) {
	for _, c := range []struct {
		name string
		p    Argon2Params
	}{{"default", DefaultArgon2}, {"small", smallArgon2}} {
		b.Run(c.name, func(b *testing.B) {
			h := NewHasher(c.p, 0)
			phc, err := h.Hash(context.Background(), []byte("correct horse"))
			if err != nil {
				b.Fatal(err)
			}
			b.ReportAllocs()
			for b.Loop() {
				if ok, err := h.Check(context.Background(), phc, []byte("correct horse")); !ok || err != nil {
					b.Fatalf("Check = %v, %v", ok, err)
				}
			}
		})
	}
}
