package authn

import (
	"context"
	"crypto/rand"
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"fmt"
	"runtime"
	"strconv"
	"strings"
	"sync"

	"golang.org/x/crypto/argon2"
)

// ErrBadHash is returned for a stored password hash that is not an
// argon2id PHC string this package accepts: malformed, another algorithm
// or version, or parameters out of bounds.
var ErrBadHash = errors.New("authn: bad password hash")

// Argon2Params are argon2id parameters. Memory is in KiB as argon2.IDKey
// takes it.
type Argon2Params struct {
	Time    uint32
	Memory  uint32
	Threads uint8
}

// DefaultArgon2 is RFC 9106's second recommended option: t=3, m=64 MiB,
// p=4.
var DefaultArgon2 = Argon2Params{Time: 3, Memory: 64 << 10, Threads: 4}

// Bounds on what Hash writes and Check accepts. A stored hash is data:
// one with absurd parameters must not make a Check take minutes or
// gigabytes, nor panic in argon2 (time or threads 0).
const (
	argonSaltLen   = 16      // bytes of salt Hash draws
	argonTagLen    = 32      // bytes of tag Hash writes
	argonMaxMemory = 4 << 20 // KiB: 4 GiB
	argonMaxTime   = 100
	// The reference implementation's minimums (argon2.h), and a maximum
	// of our own that no real hash comes near.
	argonMinSalt, argonMinTag = 8, 4
	argonMaxSaltTag           = 1024
)

// phcPrefix starts every hash Check accepts: argon2id, version 0x13.
const phcPrefix = "$argon2id$v=19$"

// validate reports why p is out of bounds, or nil.
func (p Argon2Params) validate() error {
	switch {
	case p.Time < 1 || p.Time > argonMaxTime:
		return fmt.Errorf("%w: time %d not in [1, %d]", ErrBadHash, p.Time, argonMaxTime)
	case p.Threads < 1:
		return fmt.Errorf("%w: threads 0", ErrBadHash)
	case p.Memory > argonMaxMemory:
		return fmt.Errorf("%w: memory %d KiB over 4 GiB", ErrBadHash, p.Memory)
	case p.Memory < 8*uint32(p.Threads):
		// argon2.IDKey would raise it silently; the reference refuses.
		return fmt.Errorf("%w: memory %d KiB under 8 KiB per thread", ErrBadHash, p.Memory)
	}
	return nil
}

// Hasher hashes and checks passwords. At most slots hashes run at once,
// so that a flood of wrong passwords takes at most slots × Memory of RAM;
// further callers wait for a slot, as long as their context allows.
type Hasher struct {
	p     Argon2Params
	slots chan struct{} // a hash holds one element while it runs
	// key is argon2.IDKey; tests wrap it to count the hashes running.
	key func(password, salt []byte, time, memory uint32, threads uint8, keyLen uint32) []byte

	dummyOnce sync.Once
	dummy     string // a hash with h's parameters that no password matches
}

// NewHasher returns a hasher that makes hashes with p (DefaultArgon2 if p
// is zero) and runs at most slots of them at once (runtime.GOMAXPROCS(0)
// if slots ≤ 0). It panics if p is out of the bounds Check accepts (time
// 1 to 100, at least one thread, 8 KiB per thread to 4 GiB of memory): p
// comes from the configuration, which validates it.
func NewHasher(p Argon2Params, slots int) *Hasher {
	if p == (Argon2Params{}) {
		p = DefaultArgon2
	}
	if err := p.validate(); err != nil {
		panic("authn: NewHasher: " + err.Error())
	}
	if slots <= 0 {
		slots = runtime.GOMAXPROCS(0)
	}
	return &Hasher{p: p, slots: make(chan struct{}, slots), key: argon2.IDKey}
}

// Hash returns a PHC string "$argon2id$v=19$m=65536,t=3,p=4$<salt>$<hash>"
// of password: 16 random bytes of salt and a 32-byte tag, both in unpadded
// standard base64 as the reference implementation writes them. It fails
// only if ctx ends while it waits for a slot.
func (h *Hasher) Hash(ctx context.Context, password []byte) (string, error) {
	var salt [argonSaltLen]byte
	_, _ = rand.Read(salt[:]) // never fails (crypto/rand)
	tag, err := h.derive(ctx, password, salt[:], h.p, argonTagLen)
	if err != nil {
		return "", err
	}
	return formatPHC(h.p, salt[:], tag), nil
}

// Check reports whether password matches phc, comparing in constant time,
// with the parameters stored in phc (not h's). A malformed phc, or one
// with parameters out of bounds (see NewHasher), is ErrBadHash. It fails
// too if ctx ends while it waits for a slot.
func (h *Hasher) Check(ctx context.Context, phc string, password []byte) (bool, error) {
	ph, err := parsePHC(phc)
	if err != nil {
		return false, err
	}
	tag, err := h.derive(ctx, password, ph.salt, ph.p, uint32(len(ph.tag)))
	if err != nil {
		return false, err
	}
	return subtle.ConstantTimeCompare(tag, ph.tag) == 1, nil
}

// CheckAbsent costs what a Check of a hash made by h costs, for a user
// who does not exist, so that an unknown user and a wrong password take
// the same time. The answer is always no, so it returns nothing.
func (h *Hasher) CheckAbsent(ctx context.Context, password []byte) {
	h.dummyOnce.Do(func() {
		// Random salt and tag: parsing and checking it costs exactly what
		// a real hash does, and making it costs no hash.
		var salt [argonSaltLen]byte
		var tag [argonTagLen]byte
		_, _ = rand.Read(salt[:])
		_, _ = rand.Read(tag[:])
		h.dummy = formatPHC(h.p, salt[:], tag[:])
	})
	_, _ = h.Check(ctx, h.dummy, password)
}

// NeedsRehash reports whether phc differs from what Hash writes in its
// parameters, salt length or tag length, so that it should be replaced
// by a new hash of the password just checked. It is true of a malformed
// phc.
func (h *Hasher) NeedsRehash(phc string) bool {
	ph, err := parsePHC(phc)
	return err != nil || ph.p != h.p || len(ph.salt) != argonSaltLen || len(ph.tag) != argonTagLen
}

// derive runs argon2id in a slot.
func (h *Hasher) derive(ctx context.Context, password, salt []byte, p Argon2Params, keyLen uint32) ([]byte, error) {
	if err := h.acquire(ctx); err != nil {
		return nil, fmt.Errorf("authn: waiting for a password hash slot: %w", err)
	}
	defer func() { <-h.slots }()
	return h.key(password, salt, p.Time, p.Memory, p.Threads, keyLen), nil
}

// acquire takes a slot, unless ctx ends first (or has ended: a caller
// gone away must not cost a hash).
func (h *Hasher) acquire(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	select {
	case h.slots <- struct{}{}:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// phcHash is a parsed argon2id PHC string.
type phcHash struct {
	p         Argon2Params
	salt, tag []byte
}

// formatPHC writes the PHC string of an argon2id hash.
func formatPHC(p Argon2Params, salt, tag []byte) string {
	enc := base64.RawStdEncoding
	b := make([]byte, 0, len(phcPrefix)+len("m=4294967295,t=100,p=255$$")+enc.EncodedLen(len(salt))+enc.EncodedLen(len(tag)))
	b = append(b, phcPrefix...)
	b = append(b, "m="...)
	b = strconv.AppendUint(b, uint64(p.Memory), 10)
	b = append(b, ",t="...)
	b = strconv.AppendUint(b, uint64(p.Time), 10)
	b = append(b, ",p="...)
	b = strconv.AppendUint(b, uint64(p.Threads), 10)
	b = append(b, '$')
	b = enc.AppendEncode(b, salt)
	b = append(b, '$')
	b = enc.AppendEncode(b, tag)
	return string(b)
}

// parsePHC parses an argon2id PHC string as the reference implementation
// writes it: "$argon2id$v=19$m=<KiB>,t=<passes>,p=<threads>$<salt>$<tag>",
// decimal numbers without leading zeros, salt and tag in unpadded standard
// base64. It accepts exactly the strings formatPHC writes; anything else,
// or parameters out of bounds, is ErrBadHash.
func parsePHC(s string) (phcHash, error) {
	var ph phcHash
	rest, ok := strings.CutPrefix(s, phcPrefix)
	if !ok {
		if strings.HasPrefix(s, "$argon2id$v=") {
			return ph, fmt.Errorf("%w: not argon2 version 19", ErrBadHash)
		}
		return ph, fmt.Errorf("%w: not an argon2id PHC string", ErrBadHash)
	}
	var m, t, p uint64
	if m, rest, ok = phcParam(rest, "m=", ','); ok {
		if t, rest, ok = phcParam(rest, "t=", ','); ok {
			p, rest, ok = phcParam(rest, "p=", '$')
		}
	}
	if !ok {
		return ph, fmt.Errorf("%w: parameters are not m=<n>,t=<n>,p=<n>", ErrBadHash)
	}
	// Checked before the conversions below can truncate them.
	switch {
	case p > 255:
		return ph, fmt.Errorf("%w: %d threads over 255", ErrBadHash, p)
	case m > argonMaxMemory:
		return ph, fmt.Errorf("%w: memory %d KiB over 4 GiB", ErrBadHash, m)
	case t > argonMaxTime:
		return ph, fmt.Errorf("%w: time %d over %d", ErrBadHash, t, argonMaxTime)
	}
	ph.p = Argon2Params{Time: uint32(t), Memory: uint32(m), Threads: uint8(p)}
	if err := ph.p.validate(); err != nil {
		return ph, err
	}
	salt, tag, ok := strings.Cut(rest, "$")
	if !ok {
		return ph, fmt.Errorf("%w: no tag", ErrBadHash)
	}
	var err error
	if ph.salt, err = phcBase64(salt, argonMinSalt); err != nil {
		return ph, fmt.Errorf("%w: salt: %v", ErrBadHash, err)
	}
	if ph.tag, err = phcBase64(tag, argonMinTag); err != nil {
		return ph, fmt.Errorf("%w: tag: %v", ErrBadHash, err)
	}
	return ph, nil
}

// phcParam parses name, a decimal number below 2³² without leading zeros,
// and the byte end, at the start of s; it returns the number and what
// follows end.
func phcParam(s, name string, end byte) (n uint64, rest string, ok bool) {
	s, ok = strings.CutPrefix(s, name)
	if !ok {
		return 0, "", false
	}
	i := 0
	for ; i < len(s) && '0' <= s[i] && s[i] <= '9'; i++ {
		if i == 10 || (i == 1 && s[0] == '0') {
			return 0, "", false
		}
		n = n*10 + uint64(s[i]-'0')
	}
	if i == 0 || i == len(s) || s[i] != end || n > 1<<32-1 {
		return 0, "", false
	}
	return n, s[i+1:], true
}

// phcEncoding is the base64 of salts and tags. Strict: the unused bits
// of the last character must be zero, so that a hash has one spelling.
var phcEncoding = base64.RawStdEncoding.Strict()

// phcBase64 decodes s, unpadded standard base64 of minLen to
// argonMaxSaltTag bytes, in its canonical form only.
func phcBase64(s string, minLen int) ([]byte, error) {
	enc := phcEncoding
	if len(s) < enc.EncodedLen(minLen) || len(s) > enc.EncodedLen(argonMaxSaltTag) {
		return nil, fmt.Errorf("%d base64 characters not in [%d, %d]", len(s), enc.EncodedLen(minLen), enc.EncodedLen(argonMaxSaltTag))
	}
	if strings.ContainsAny(s, "\r\n") { // which the decoder would skip
		return nil, errors.New("line break")
	}
	return enc.DecodeString(s)
}
