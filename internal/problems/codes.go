package problems

// Code is a stable, machine-readable identifier of a problem. Codes are
// part of the external contract: never rename one, only add.
type Code string

// The catalogue of public error codes.
const (
	CodeBadRequest          Code = "bad_request"
	CodeBodyTooLarge        Code = "body_too_large"
	CodeHeadersTooLarge     Code = "headers_too_large"
	CodeRequestTimeout      Code = "request_timeout"
	CodeRouteNotFound       Code = "route_not_found"
	CodeCredentialMissing   Code = "credential_missing"
	CodeCredentialMalformed Code = "credential_malformed"
	CodeCredentialInvalid   Code = "credential_invalid"
	CodeCredentialExpired   Code = "credential_expired"
	CodeForbidden           Code = "forbidden"
	CodeTooManyFailures     Code = "too_many_failures"
	CodeTLSRequired         Code = "tls_required"
	// The errors of RFC 6749 §5.2, RFC 6750 §3.1 and RFC 7009 §2.2.1,
	// under the names the RFCs give them.
	CodeInvalidRequest       Code = "invalid_request"
	CodeInvalidClient        Code = "invalid_client"
	CodeInvalidGrant         Code = "invalid_grant"
	CodeUnauthorizedClient   Code = "unauthorized_client"
	CodeUnsupportedGrantType Code = "unsupported_grant_type"
	CodeInvalidScope         Code = "invalid_scope"
	CodeUnsupportedTokenType Code = "unsupported_token_type"
	CodeQuotaExceeded        Code = "quota_exceeded"
	CodeRateLimited          Code = "rate_limited"
	CodeConcurrencyLimited   Code = "concurrency_limited"
	CodeStoreUnavailable     Code = "store_unavailable"
	CodeUpstreamUnreachable  Code = "upstream_unreachable"
	CodeUpstreamTimeout      Code = "upstream_timeout"
	CodeUpstreamError        Code = "upstream_error"
	CodeUpgradeRefused       Code = "upgrade_refused"
	CodeInternal             Code = "internal_error"
	CodeUnauthorized         Code = "unauthorized"
	CodeNotFound             Code = "not_found"
	CodeMethodNotAllowed     Code = "method_not_allowed"
	CodeInvalidField         Code = "invalid_field"
	CodeConflict             Code = "conflict"
	CodeUnavailable          Code = "unavailable"
	CodeVersionNotSupported  Code = "version_not_supported"
	CodeInvalidFraming       Code = "invalid_framing"
	CodeInvalidTarget        Code = "invalid_target"
	CodeInvalidHost          Code = "invalid_host"
	CodeAmbiguousPath        Code = "ambiguous_path"
)

// Entry describes one code: the status it is normally sent with and the
// default message shown to clients.
type Entry struct {
	Code    Code
	Status  int
	Message string
}

// Catalogue lists every public code. A test keeps codes unique and every
// constant above listed here.
var Catalogue = []Entry{
	{CodeBadRequest, 400, "the request could not be parsed"},
	{CodeBodyTooLarge, 413, "the request body is too large"},
	{CodeHeadersTooLarge, 431, "the request headers are too large"},
	{CodeRequestTimeout, 408, "the request was not received in time"},
	{CodeRouteNotFound, 404, "no route matches this request"},
	{CodeCredentialMissing, 401, "a credential is required"},
	{CodeCredentialMalformed, 401, "the credential is malformed"},
	{CodeCredentialInvalid, 401, "the credential is not valid"},
	{CodeCredentialExpired, 401, "the credential has expired"},
	{CodeTooManyFailures, 429, "too many failed authentications; retry later"},
	{CodeTLSRequired, 403, "this route accepts requests over HTTPS only"},
	{CodeInvalidRequest, 400, "the token request is missing a parameter, repeats one, or is malformed"},
	{CodeInvalidClient, 401, "the client could not be authenticated"},
	{CodeInvalidGrant, 400, "the user name and password are not valid"},
	{CodeUnauthorizedClient, 400, "the client may not use this grant"},
	{CodeUnsupportedGrantType, 400, "the grant type is not supported"},
	{CodeInvalidScope, 400, "the scope asked for is unknown or beyond the client's"},
	{CodeUnsupportedTokenType, 400, "the token type cannot be revoked"},
	{CodeForbidden, 403, "the credential may not access this route"},
	{CodeQuotaExceeded, 429, "the monthly request quota is exhausted"},
	{CodeRateLimited, 429, "too many requests in a short time"},
	{CodeConcurrencyLimited, 429, "too many requests in flight"},
	{CodeStoreUnavailable, 503, "the credential store is unavailable"},
	{CodeUpstreamUnreachable, 502, "the upstream could not be reached"},
	{CodeUpstreamTimeout, 504, "the upstream did not answer in time"},
	{CodeUpstreamError, 502, "the upstream answered with an error"},
	{CodeUpgradeRefused, 501, "protocol upgrades are not allowed on this route"},
	{CodeInternal, 500, "internal error"},
	{CodeUnauthorized, 401, "a valid admin token is required"},
	{CodeNotFound, 404, "not found"},
	{CodeMethodNotAllowed, 405, "method not allowed"},
	{CodeInvalidField, 400, "invalid value"},
	{CodeConflict, 409, "already exists"},
	{CodeUnavailable, 503, "the service is not ready"},
	{CodeVersionNotSupported, 505, "only HTTP/1.1 and HTTP/1.0 are served"},
	{CodeInvalidFraming, 400, "the request's framing is not unambiguous HTTP/1.1"},
	{CodeInvalidTarget, 400, "the request target is not valid"},
	{CodeInvalidHost, 400, "the request's host is missing or not valid"},
	{CodeAmbiguousPath, 400, "the request path is ambiguous"},
}

var byCode = func() map[Code]Entry {
	m := make(map[Code]Entry, len(Catalogue))
	for _, e := range Catalogue {
		m[e.Code] = e
	}
	return m
}()

// Message returns the catalogue's default message for c.
func (c Code) Message() string { return byCode[c].Message }

// Status returns the catalogue's status for c, 500 for an unknown code.
func (c Code) Status() int {
	if e, ok := byCode[c]; ok {
		return e.Status
	}
	return 500
}
