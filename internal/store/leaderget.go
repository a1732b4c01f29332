package store

import (
	"context"
	"encoding/json"
	"fmt"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// GetAtLeader decodes the JSON value of key in kv into v, as read by the
// leader of the bucket's stream. A KV Get is a direct get, which any
// replica of the stream may answer, also one that is behind: a node
// catching up after a restart answers with a value that was deleted
// seconds ago. That is harmless for a record an admin is about to write
// (a compare-and-set will tell), not for a credential: a key looked up
// on a miss and found at a replica behind the DELETE would be admitted
// again (issue 14's cluster test: a revoked key admitted for 10.5 s by a
// replica whose lookups reached the node that had just restarted). The
// leader has every acknowledged write. While the stream has no leader,
// the read fails (the caller answers 503) instead of guessing.
func (s *Store) GetAtLeader(ctx context.Context, kv jetstream.KeyValue, key string, v any) (revision uint64, err error) {
	bucket := kv.Bucket()
	req, _ := json.Marshal(struct {
		LastBySubject string `json:"last_by_subj"`
	}{"$KV." + bucket + "." + key})
	msg, err := s.NC.RequestWithContext(ctx, "$JS.API.STREAM.MSG.GET.KV_"+bucket, req)
	if err != nil {
		return 0, fmt.Errorf("store: get %s at the leader: %w", key, err)
	}
	var resp struct {
		Message *struct {
			Sequence uint64 `json:"seq"`
			Header   []byte `json:"hdrs"`
			Data     []byte `json:"data"`
		} `json:"message"`
		Error *jetstream.APIError `json:"error"`
	}
	if err := json.Unmarshal(msg.Data, &resp); err != nil {
		return 0, fmt.Errorf("store: get %s at the leader: %w", key, err)
	}
	switch {
	case resp.Error != nil && resp.Error.ErrorCode == jetstream.JSErrCodeMessageNotFound:
		return 0, ErrNotFound
	case resp.Error != nil:
		return 0, fmt.Errorf("store: get %s at the leader: %w", key, resp.Error)
	case resp.Message == nil:
		return 0, fmt.Errorf("store: get %s at the leader: %w", key, jetstream.ErrInvalidJetStreamResponse)
	}
	if len(resp.Message.Header) > 0 {
		h, err := nats.DecodeHeadersMsg(resp.Message.Header)
		if err != nil {
			return 0, fmt.Errorf("store: get %s at the leader: %w", key, err)
		}
		if op := h.Get("KV-Operation"); op == "DEL" || op == "PURGE" {
			return 0, ErrNotFound
		}
	}
	if err := json.Unmarshal(resp.Message.Data, v); err != nil {
		return 0, fmt.Errorf("store: decode %s: %w", key, err)
	}
	return resp.Message.Sequence, nil
}
