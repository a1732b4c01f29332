package store

import "time"

// NotificationRetention is how long the notifications bucket keeps a
// record after its last change (the bucket's TTL): a delivered one is
// listed by GET /v1/notifications for this long. It must outlast a quota
// period (31 days) with room to spare: a usage notification's key is
// created once per tenant, period, threshold and limit, and a record that
// expired while its period still runs could be created, and sent, again.
// A pending one is rewritten at each attempt, so it does not expire while
// it is being retried.
const NotificationRetention = 45 * 24 * time.Hour
