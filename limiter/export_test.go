package limiter

// Workers runs f(i) for i in [0, n) on w goroutines, as Close does.
var Workers = workers

// MinStep is how far at least the spending bound runs ahead of spending.
const MinStep = minStep

// CloseChunk and CloseBatchWorkers: with batches, Close works on
// CloseBatchWorkers chunks of CloseChunk tenants at a time.
const CloseChunk, CloseBatchWorkers = closeChunk, closeBatchWorkers

// Refilling reports whether a background refill of tenant's lease is
// queued or under way.
func (q *Quotas) Refilling(tenant string) bool {
	st, ok := q.tenants.Get(tenant)
	return ok && st.queued.Load()
}
