package proxy

// SetLimitHeaders is setLimitHeaders, for benchmarks.
var SetLimitHeaders = setLimitHeaders
