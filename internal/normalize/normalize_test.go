package normalize

import (
	"bytes"
	"compress/gzip"
	"encoding/json"
	"reflect"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/tollgate/tollgate/internal/problems"
)

// p builds the expected problem for the common case: SEVERE, upstream_error.
func p(field, msg string) problems.Problem {
	return problems.Problem{Level: problems.Severe, Code: problems.CodeUpstreamError, Field: field, Message: msg}
}

// pc is p with the upstream's own code.
func pc(code, field, msg string) problems.Problem {
	return problems.Problem{Level: problems.Severe, Code: problems.Code(code), Field: field, Message: msg}
}

// pl is p with a level.
func pl(lvl problems.Level, field, msg string) problems.Problem {
	return problems.Problem{Level: lvl, Code: problems.CodeUpstreamError, Field: field, Message: msg}
}

func gz(s string) []byte {
	var b bytes.Buffer
	w := gzip.NewWriter(&b)
	w.Write([]byte(s))
	w.Close()
	return b.Bytes()
}

const nginx502 = "<html>\r\n<head><title>502 Bad Gateway</title></head>\r\n<body>\r\n" +
	"<center><h1>502 Bad Gateway</h1></center>\r\n<hr><center>nginx/1.25.3</center>\r\n</body>\r\n</html>\r\n"

const nginx404 = "<html>\r\n<head><title>404 Not Found</title></head>\r\n<body>\r\n" +
	"<center><h1>404 Not Found</h1></center>\r\n<hr><center>nginx</center>\r\n</body>\r\n</html>\r\n"

const apache500 = `<!DOCTYPE HTML PUBLIC "-//IETF//DTD HTML 2.0//EN">
<html><head>
<title>500 Internal Server Error</title>
</head><body>
<h1>Internal Server Error</h1>
<p>The server encountered an internal error or
misconfiguration and was unable to complete
your request.</p>
<p>Please contact the server administrator at 
 webmaster@internal.example.com to inform them of the time this error occurred.</p>
<hr>
<address>Apache/2.4.57 (Debian) Server at 10.0.3.7 Port 8080</address>
</body></html>
`

const express404 = `<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>Error</title>
</head>
<body>
<pre>Cannot GET /api/v1/nope</pre>
</body>
</html>
`

const problemsBody502 = `{"ok":false,"status":502,"problems":[{"level":"SEVERE","code":"upstream_unreachable","message":"the upstream could not be reached"},{"level":"WARNING","field":"x-route","message":"route is degraded"}]}`

// bomb is 8 MiB of text squeezed into a few KiB of gzip.
var bomb = gz(strings.Repeat("A", 8<<20))

type bodyCase struct {
	name      string
	status    int
	ct, ce    string
	body      []byte
	truncated bool
	o         Options
	want      []problems.Problem
	already   bool
}

var bodyCases = []bodyCase{
	{
		name: "nginx 502 html", status: 502, ct: "text/html", body: []byte(nginx502),
		want: []problems.Problem{p("", "Bad Gateway")},
	},
	{
		name: "nginx 404 html without content type", status: 404, body: []byte(nginx404),
		want: []problems.Problem{p("", "Not Found")},
	},
	{
		name: "apache 500 html", status: 500, ct: "text/html; charset=iso-8859-1", body: []byte(apache500),
		want: []problems.Problem{p("", "Internal Server Error")},
	},
	{
		name: "express default 404 html", status: 404, ct: "text/html; charset=utf-8", body: []byte(express404),
		want: []problems.Problem{p("", "Not Found")},
	},
	{
		name: "express res.send text labelled html", status: 400, ct: "text/html; charset=utf-8",
		body: []byte("Invalid user id &quot;abc&quot;"),
		want: []problems.Problem{p("", `Invalid user id "abc"`)},
	},
	{
		name: "express rate limit plain text", status: 429, ct: "text/plain; charset=utf-8",
		body: []byte("Too many requests, please try again later."),
		want: []problems.Problem{p("", "Too many requests, please try again later.")},
	},
	{
		name: "go default not found text", status: 404, ct: "text/plain; charset=utf-8", body: []byte("404 page not found\n"),
		want: []problems.Problem{p("", "404 page not found")},
	},
	{
		name: "text white space collapsed", status: 500, ct: "text/plain",
		body: []byte("  upstream failed:\r\n\t  connection\x07 reset  \n"),
		want: []problems.Problem{p("", "upstream failed: connection reset")},
	},
	{
		name: "text with a page inside", status: 500, ct: "text/plain",
		body: []byte("proxy error: <html><body>backend down</body></html>"),
		want: []problems.Problem{p("", "Internal Server Error")},
	},
	{
		name: "xml soap fault", status: 500, ct: "text/xml; charset=utf-8",
		body: []byte(`<?xml version="1.0"?><soap:Envelope><soap:Body><soap:Fault><faultstring>NullPointerException at com.example.Foo</faultstring></soap:Fault></soap:Body></soap:Envelope>`),
		want: []problems.Problem{p("", "Internal Server Error")},
	},
	{
		name: "spring boot error", status: 500, ct: "application/json",
		body: []byte(`{"timestamp":"2024-05-01T10:00:00.000+00:00","status":500,"error":"Internal Server Error","message":"Database connection refused","path":"/api/orders"}`),
		want: []problems.Problem{p("", "Database connection refused")},
	},
	{
		name: "spring boot error without message", status: 404, ct: "application/json",
		body: []byte(`{"timestamp":"2024-05-01T10:00:00.000+00:00","status":404,"error":"Not Found","message":"No message available","path":"/api/orders/7"}`),
		want: []problems.Problem{p("", "Not Found")},
	},
	{
		name: "spring boot binding errors", status: 400, ct: "application/json",
		body: []byte(`{"timestamp":"2024-05-01T10:00:00.000+00:00","status":400,"error":"Bad Request","message":"Validation failed for object='user'. Error count: 1","errors":[{"codes":["NotBlank.user.name","NotBlank"],"defaultMessage":"must not be blank","objectName":"user","field":"name","rejectedValue":null,"bindingFailure":false,"code":"NotBlank"}],"path":"/users"}`),
		want: []problems.Problem{
			p("", "Validation failed for object='user'. Error count: 1"),
			pc("NotBlank", "name", "must not be blank"),
		},
	},
	{
		name: "django rest detail", status: 401, ct: "application/json",
		body: []byte(`{"detail":"Authentication credentials were not provided."}`),
		want: []problems.Problem{p("", "Authentication credentials were not provided.")},
	},
	{
		name: "django rest field errors", status: 400, ct: "application/json",
		body: []byte(`{"username":["This field is required."],"email":["Enter a valid email address.","Ensure this field has no more than 254 characters."],"non_field_errors":["The fields team, name must make a unique set."]}`),
		want: []problems.Problem{
			p("username", "This field is required."),
			p("email", "Enter a valid email address."),
			p("email", "Ensure this field has no more than 254 characters."),
			p("", "The fields team, name must make a unique set."),
		},
	},
	{
		name: "django rest nested and list serializers", status: 400, ct: "application/json",
		body: []byte(`{"address":{"zip":["Enter a valid postal code."]},"items":[{},{"qty":["Ensure this value is greater than or equal to 1."]}]}`),
		want: []problems.Problem{
			p("address.zip", "Enter a valid postal code."),
			p("items.1.qty", "Ensure this value is greater than or equal to 1."),
		},
	},
	{
		name: "rails errors map", status: 422, ct: "application/json; charset=utf-8",
		body: []byte(`{"errors":{"email":["can't be blank","is invalid"],"password":["is too short (minimum is 8 characters)"]}}`),
		want: []problems.Problem{
			p("email", "can't be blank"),
			p("email", "is invalid"),
			p("password", "is too short (minimum is 8 characters)"),
		},
	},
	{
		name: "laravel message and errors map", status: 422, ct: "application/json",
		body: []byte(`{"message":"The email field is required. (and 1 more error)","errors":{"email":["The email field is required."],"password":["The password field must be at least 8 characters."]}}`),
		want: []problems.Problem{
			p("", "The email field is required. (and 1 more error)"),
			p("email", "The email field is required."),
			p("password", "The password field must be at least 8 characters."),
		},
	},
	{
		name: "asp.net validation problem details", status: 400, ct: "application/problem+json; charset=utf-8",
		body: []byte(`{"type":"https://tools.ietf.org/html/rfc9110#section-15.5.1","title":"One or more validation errors occurred.","status":400,"errors":{"Name":["The Name field is required."]},"traceId":"00-84c1fd4063c38d9f3900d06e56542d48-85d1d4-00"}`),
		want: []problems.Problem{
			p("", "One or more validation errors occurred."),
			p("Name", "The Name field is required."),
		},
	},
	{
		name: "rfc 9457 detail", status: 403, ct: "application/problem+json",
		body: []byte(`{"type":"https://example.com/probs/out-of-credit","title":"You do not have enough credit.","detail":"Your current balance is 30, but that costs 50.","instance":"/account/12345/msgs/abc","balance":30,"accounts":["/account/12345","/account/67890"]}`),
		want: []problems.Problem{p("", "Your current balance is 30, but that costs 50.")},
	},
	{
		name: "rfc 9457 errors extension", status: 422, ct: "application/problem+json",
		body: []byte(`{"type":"https://example.net/validation-error","title":"Your request is not valid.","errors":[{"detail":"must be a positive integer","pointer":"#/age"},{"detail":"must be 'green', 'red' or 'blue'","pointer":"#/profile/color"}]}`),
		want: []problems.Problem{
			p("", "Your request is not valid."),
			p("age", "must be a positive integer"),
			p("profile.color", "must be 'green', 'red' or 'blue'"),
		},
	},
	{
		name: "rfc 7807 invalid-params", status: 400, ct: "application/problem+json",
		body: []byte(`{"type":"https://example.net/validation-error","title":"Your request parameters didn't validate.","invalid-params":[{"name":"age","reason":"must be a positive integer"},{"name":"color","reason":"must be 'green', 'red' or 'blue'"}]}`),
		want: []problems.Problem{
			p("", "Your request parameters didn't validate."),
			p("age", "must be a positive integer"),
			p("color", "must be 'green', 'red' or 'blue'"),
		},
	},
	{
		name: "errors list of strings", status: 422, ct: "application/json",
		body: []byte(`{"errors":["Name can't be blank","Email is invalid"]}`),
		want: []problems.Problem{p("", "Name can't be blank"), p("", "Email is invalid")},
	},
	{
		name: "errors list of objects", status: 400, ct: "application/json",
		body: []byte(`{"errors":[{"field":"email","message":"is already taken"},{"field":"age","msg":"must be at least 18","code":"too_young"},{"location":"query","param":"limit","description":"must be at most 100"}]}`),
		want: []problems.Problem{
			p("email", "is already taken"),
			pc("too_young", "age", "must be at least 18"),
			p("limit", "must be at most 100"),
		},
	},
	{
		name: "json:api errors with source.pointer", status: 422, ct: "application/vnd.api+json",
		body: []byte(`{"jsonapi":{"version":"1.1"},"errors":[{"status":"422","source":{"pointer":"/data/attributes/firstName"},"title":"Invalid Attribute","detail":"First name must contain at least three characters."},{"status":"422","code":"password_too_short","source":{"pointer":"/data/attributes/pass~1word"},"title":"Password is too short"},{"status":"400","source":{"parameter":"include"},"title":"Invalid Query Parameter"}]}`),
		want: []problems.Problem{
			p("data.attributes.firstName", "First name must contain at least three characters."),
			pc("password_too_short", "data.attributes.pass/word", "Password is too short"),
			p("include", "Invalid Query Parameter"),
		},
	},
	{
		name: "google api error with field violations", status: 400, ct: "application/json; charset=UTF-8",
		body: []byte(`{"error":{"code":400,"message":"Invalid value at 'page_size' (TYPE_INT32), \"ten\"","status":"INVALID_ARGUMENT","details":[{"@type":"type.googleapis.com/google.rpc.ErrorInfo","reason":"BAD_VALUE","domain":"googleapis.com"},{"@type":"type.googleapis.com/google.rpc.BadRequest","fieldViolations":[{"field":"page_size","description":"Invalid value at 'page_size' (TYPE_INT32), \"ten\""}]}]}}`),
		want: []problems.Problem{
			p("", `Invalid value at 'page_size' (TYPE_INT32), "ten"`),
			p("page_size", `Invalid value at 'page_size' (TYPE_INT32), "ten"`),
		},
	},
	{
		name: "google legacy error with errors list", status: 401, ct: "application/json",
		body: []byte(`{"error":{"errors":[{"domain":"global","reason":"required","message":"Login Required","locationType":"header","location":"Authorization"}],"code":401,"message":"Login Required"}}`),
		want: []problems.Problem{p("", "Login Required"), p("Authorization", "Login Required")},
	},
	{
		name: "google error repeated message deduplicated", status: 404, ct: "application/json",
		body: []byte(`{"error":{"code":404,"message":"Requested entity was not found.","errors":[{"message":"Requested entity was not found.","domain":"global","reason":"notFound"}],"status":"NOT_FOUND"}}`),
		want: []problems.Problem{p("", "Requested entity was not found.")},
	},
	{
		name: "stripe error object", status: 404, ct: "application/json",
		body: []byte(`{"error":{"code":"resource_missing","doc_url":"https://stripe.com/docs/error-codes/resource-missing","message":"No such customer: 'cus_123'","param":"customer","request_log_url":"https://dashboard.stripe.com/test/logs/req_1","type":"invalid_request_error"}}`),
		want: []problems.Problem{pc("resource_missing", "customer", "No such customer: 'cus_123'")},
	},
	{
		name: "error object without message", status: 409, ct: "application/json",
		body: []byte(`{"error":{"code":409,"kind":"conflict"},"message":"Order 7 was already shipped"}`),
		want: []problems.Problem{p("", "Order 7 was already shipped")},
	},
	{
		name: "oauth2 error", status: 400, ct: "application/json;charset=UTF-8",
		body: []byte(`{"error":"invalid_grant","error_description":"The provided authorization grant is invalid, expired, or revoked."}`),
		want: []problems.Problem{p("", "The provided authorization grant is invalid, expired, or revoked.")},
	},
	{
		name: "oauth2 error without description", status: 401, ct: "application/json",
		body: []byte(`{"error":"invalid_client"}`),
		want: []problems.Problem{p("", "invalid_client")},
	},
	{
		name: "error and message", status: 404, ct: "application/json",
		body: []byte(`{"error":"Not Found","message":"User 42 does not exist"}`),
		want: []problems.Problem{p("", "User 42 does not exist")},
	},
	{
		name: "aws capitalised message", status: 403, ct: "application/json",
		body: []byte(`{"Message":"User: anonymous is not authorized to perform: execute-api:Invoke"}`),
		want: []problems.Problem{p("", "User: anonymous is not authorized to perform: execute-api:Invoke")},
	},
	{
		name: "graphql errors with path", status: 400, ct: "application/graphql-response+json",
		body: []byte(`{"errors":[{"message":"Cannot query field \"nmae\" on type \"User\".","locations":[{"line":2,"column":5}],"path":["users",0,"nmae"],"extensions":{"code":"GRAPHQL_VALIDATION_FAILED"}}],"data":null}`),
		want: []problems.Problem{pc("GRAPHQL_VALIDATION_FAILED", "users.0.nmae", `Cannot query field "nmae" on type "User".`)},
	},
	{
		name: "fastapi detail list", status: 422, ct: "application/json",
		body: []byte(`{"detail":[{"type":"missing","loc":["body","name"],"msg":"Field required","input":{}}]}`),
		want: []problems.Problem{p("body.name", "Field required")},
	},
	{
		name: "level and severity members", status: 400, ct: "application/json",
		body: []byte(`{"errors":[{"message":"parameter 'v' is deprecated","severity":"warning"},{"message":"quota 90% used","level":"INFO"},{"message":"order rejected","severity":"FATAL"},{"message":"unknown level","level":"purple"}]}`),
		want: []problems.Problem{
			pl(problems.Warning, "", "parameter 'v' is deprecated"),
			pl(problems.Info, "", "quota 90% used"),
			pl(problems.Severe, "", "order rejected"),
			pl(problems.Severe, "", "unknown level"),
		},
	},
	{
		name: "document level inherited", status: 400, ct: "application/json",
		body: []byte(`{"level":"notice","message":"partial result","errors":["item 3 skipped"]}`),
		want: []problems.Problem{pl(problems.Info, "", "partial result"), pl(problems.Info, "", "item 3 skipped")},
	},
	{
		name: "entry without message keeps field and code", status: 422, ct: "application/json",
		body: []byte(`{"errors":[{"field":"email","code":"invalid_format"}]}`),
		want: []problems.Problem{pc("invalid_format", "email", "Unprocessable Entity")},
	},
	{
		name: "unknown object with message", status: 500, ct: "application/json",
		body: []byte(`{"data":null,"code":1234,"message":"Something broke"}`),
		want: []problems.Problem{p("", "Something broke")},
	},
	{
		name: "unknown object", status: 503, ct: "application/json",
		body: []byte(`{"status":"down","uptime":0}`),
		want: []problems.Problem{p("", "Service Unavailable")},
	},
	{
		name: "json array", status: 500, ct: "application/json",
		body: []byte(`["something","went","wrong"]`),
		want: []problems.Problem{p("", "Internal Server Error")},
	},
	{
		name: "json number", status: 500, ct: "application/json",
		body: []byte(`42`),
		want: []problems.Problem{p("", "Internal Server Error")},
	},
	{
		name: "text mislabelled json", status: 502, ct: "application/json",
		body: []byte(`upstream connect error or disconnect/reset before headers. reset reason: connection failure`),
		want: []problems.Problem{p("", "upstream connect error or disconnect/reset before headers. reset reason: connection failure")},
	},
	{
		name: "text starting with a bracket", status: 500, ct: "text/plain",
		body: []byte(`[ERROR] no database`),
		want: []problems.Problem{p("", "[ERROR] no database")},
	},
	{
		name: "broken json object", status: 500, ct: "text/plain",
		body: []byte(`{error: 'db down', stack: 'at Foo.bar'}`),
		want: []problems.Problem{p("", "Internal Server Error")},
	},
	{
		name: "empty body", status: 503,
		body: nil,
		want: []problems.Problem{p("", "Service Unavailable")},
	},
	{
		name: "white space body", status: 500, ct: "text/plain",
		body: []byte(" \r\n\t "),
		want: []problems.Problem{p("", "Internal Server Error")},
	},
	{
		name: "unknown status empty body", status: 599,
		want: []problems.Problem{p("", "upstream error")},
	},
	{
		name: "binary body", status: 502, ct: "image/png",
		body: []byte("\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x00\x10"),
		want: []problems.Problem{p("", "Bad Gateway")},
	},
	{
		name: "invalid utf-8 text", status: 400, ct: "text/plain; charset=iso-8859-1",
		body: []byte("Ung\xfcltige Eingabe f\xfcr Feld \xbbname\xab"),
		want: []problems.Problem{p("", "Bad Request")},
	},
	{
		name: "gzip json", status: 422, ct: "application/json", ce: "gzip",
		body: gz(`{"errors":{"email":["is invalid"]}}`),
		want: []problems.Problem{p("email", "is invalid")},
	},
	{
		name: "gzip json without content encoding", status: 400, ct: "application/json",
		body: gz(`{"detail":"Malformed request."}`),
		want: []problems.Problem{p("", "Malformed request.")},
	},
	{
		name: "gzip text with wrong content encoding", status: 500, ct: "text/plain", ce: "br",
		body: gz("worker crashed"),
		want: []problems.Problem{p("", "worker crashed")},
	},
	{
		name: "gzip content encoding on plain body", status: 500, ct: "text/plain", ce: "gzip",
		body: []byte("plain after all"),
		want: []problems.Problem{p("", "plain after all")},
	},
	{
		name: "unreadable content encoding", status: 500, ct: "application/json", ce: "br",
		body: []byte("\x1b\x0b\x00\xf8\xa5\x00"),
		want: []problems.Problem{p("", "Internal Server Error")},
	},
	{
		name: "gzip bomb bounded", status: 500, ct: "text/plain", ce: "gzip",
		body: bomb,
		want: []problems.Problem{p("", strings.Repeat("A", DefaultMaxMessage-len(ellipsis))+ellipsis)},
	},
	{
		name: "gzip cut short", status: 400, ct: "application/json", ce: "gzip",
		body:      gz(`{"message":"bad input","errors":[{"field":"a","message":"is required"},{"field":"b","message":"must be a number"}]}`)[:70], // ends inside "is required"
		truncated: true,
		want:      []problems.Problem{p("", "bad input")},
	},
	{
		name: "huge plain text", status: 500, ct: "text/plain",
		body: []byte(strings.Repeat("error ", 300)),
		want: []problems.Problem{p("", strings.Repeat("error ", 170)+"e"+ellipsis)},
	},
	{
		name: "long text cut on a character boundary", status: 500, ct: "text/plain",
		body: []byte("héllo wörld ünïcode"), o: Options{MaxMessage: 10},
		want: []problems.Problem{p("", "héllo"+ellipsis)},
	},
	{
		name: "truncated text", status: 500, ct: "text/plain",
		body: []byte("NullPointerException in OrderSer\xc3"), truncated: true,
		want: []problems.Problem{p("", "NullPointerException in OrderSer"+ellipsis)},
	},
	{
		name: "truncated json keeps complete messages", status: 400, ct: "application/json",
		body:      []byte(`{"message":"Validation failed","errors":[{"field":"email","message":"is invalid"},{"field":"name","mess`),
		truncated: true,
		want:      []problems.Problem{p("", "Validation failed"), p("email", "is invalid")},
	},
	{
		name: "truncated json inside a message", status: 400, ct: "application/json",
		body:      []byte(`{"errors":[{"field":"email","message":"is inva`),
		truncated: true,
		want:      []problems.Problem{p("", "Bad Request")},
	},
	{
		name: "truncated django field map", status: 400, ct: "application/json",
		body:      []byte(`{"name":["This field is required."],"email":["Enter a val`),
		truncated: true,
		want:      []problems.Problem{p("name", "This field is required.")},
	},
	{
		name: "already problems", status: 502, ct: "application/json",
		body:    []byte(problemsBody502),
		already: true,
		want: []problems.Problem{
			{Level: problems.Severe, Code: problems.CodeUpstreamUnreachable, Message: "the upstream could not be reached"},
			{Level: problems.Warning, Field: "x-route", Message: "route is degraded"},
		},
	},
	{
		name: "already problems gzip'd", status: 502, ct: "application/json", ce: "gzip",
		body:    gz(problemsBody502),
		already: true,
		want: []problems.Problem{
			{Level: problems.Severe, Code: problems.CodeUpstreamUnreachable, Message: "the upstream could not be reached"},
			{Level: problems.Warning, Field: "x-route", Message: "route is degraded"},
		},
	},
	{
		// Passed through without Content-Encoding, the gzip bytes would be
		// garbage to the client: the problems are rendered again.
		name: "problems body gzip'd without content encoding", status: 502, ct: "application/json",
		body: gz(problemsBody502),
		want: []problems.Problem{
			{Level: problems.Severe, Code: problems.CodeUpstreamUnreachable, Message: "the upstream could not be reached"},
			pl(problems.Warning, "x-route", "route is degraded"),
		},
	},
	{
		name: "problems body after a bom", status: 502, ct: "application/json",
		body: []byte("\xef\xbb\xbf" + problemsBody502),
		want: []problems.Problem{
			{Level: problems.Severe, Code: problems.CodeUpstreamUnreachable, Message: "the upstream could not be reached"},
			pl(problems.Warning, "x-route", "route is degraded"),
		},
	},
	{
		name: "problems body truncated", status: 502, ct: "application/json",
		body: []byte(problemsBody502), truncated: true,
		want: []problems.Problem{
			{Level: problems.Severe, Code: problems.CodeUpstreamUnreachable, Message: "the upstream could not be reached"},
			pl(problems.Warning, "x-route", "route is degraded"),
		},
	},
	{
		name: "problems body for another status", status: 500, ct: "application/json",
		body: []byte(problemsBody502),
		want: []problems.Problem{
			{Level: problems.Severe, Code: problems.CodeUpstreamUnreachable, Message: "the upstream could not be reached"},
			pl(problems.Warning, "x-route", "route is degraded"),
		},
	},
	{
		name: "problems body with untrimmed message", status: 400, ct: "application/json",
		body: []byte(`{"ok":false,"status":400,"problems":[{"level":"INFO","code":"bad_request","message":"  spaced\nout "}]}`),
		want: []problems.Problem{{Level: problems.Info, Code: problems.CodeBadRequest, Message: "spaced out"}},
	},
	{
		name: "json strings with escapes and lone surrogate", status: 400, ct: "application/json",
		body: []byte(`{"message":"caf\u00e9 \ud83d\ude00 \ud800 tab\there\u2028"}`),
		want: []problems.Problem{p("", "café 😀 \ufffd tab here")},
	},
	{
		name: "utf-8 bom before json", status: 400, ct: "application/json",
		body: []byte("\xef\xbb\xbf{\"detail\":\"bad\"}"),
		want: []problems.Problem{p("", "bad")},
	},
}

func TestBody(t *testing.T) {
	names := map[string]bool{}
	for _, tc := range bodyCases {
		if names[tc.name] {
			t.Fatalf("duplicate case name %q", tc.name)
		}
		names[tc.name] = true
		t.Run(tc.name, func(t *testing.T) {
			got := Body(tc.status, tc.ct, tc.ce, tc.body, tc.truncated, tc.o)
			if !reflect.DeepEqual(got.Problems, tc.want) {
				t.Errorf("Problems:\n got %#v\nwant %#v", got.Problems, tc.want)
			}
			if got.Already != tc.already {
				t.Errorf("Already = %v, want %v", got.Already, tc.already)
			}
			checkResult(t, tc.status, tc.o, got)
		})
	}
}

// checkResult asserts what holds for every result.
func checkResult(t *testing.T, status int, o Options, res Result) {
	t.Helper()
	max := o.withDefaults().MaxMessage
	if len(res.Problems) == 0 {
		t.Fatal("no problems")
	}
	if len(res.Problems) > maxProblems {
		t.Errorf("%d problems, more than %d", len(res.Problems), maxProblems)
	}
	for i, pr := range res.Problems {
		if pr.Message == "" || !utf8.ValidString(pr.Message) || strings.TrimSpace(pr.Message) != pr.Message || len(pr.Message) > max {
			t.Errorf("problem %d: bad message %q", i, pr.Message)
		}
		if !utf8.ValidString(pr.Field) || strings.TrimSpace(pr.Field) != pr.Field || len(pr.Field) > max {
			t.Errorf("problem %d: bad field %q", i, pr.Field)
		}
		switch pr.Level {
		case problems.Info, problems.Warning, problems.Severe:
		default:
			t.Errorf("problem %d: bad level %q", i, pr.Level)
		}
		if pr.Code == "" && !res.Already {
			t.Errorf("problem %d: no code", i)
		}
	}
	out := problems.Append(nil, status, res.Problems)
	var b problems.Body
	if err := json.Unmarshal(out, &b); err != nil {
		t.Fatalf("problems.Append gave invalid JSON %q: %v", out, err)
	}
	if b.OK || b.Status != status || !reflect.DeepEqual(b.Problems, res.Problems) {
		t.Errorf("round trip:\n got %#v\nwant %#v", b.Problems, res.Problems)
	}
	if res.Already && !IsProblems(out) {
		t.Errorf("Already, yet the problems rendered again are not a problems body: %s", out)
	}
}

func TestIsProblems(t *testing.T) {
	for _, tc := range []struct {
		body string
		want bool
	}{
		{problemsBody502, true},
		{`{"status":404,"problems":[{"message":"x","level":"INFO"}],"ok":false}`, true},
		{` {"ok":false,"status":404,"problems":[{"level":"SEVERE","message":"x","field":""}]} `, true},
		{`{"ok":true,"status":404,"problems":[{"level":"SEVERE","message":"x"}]}`, false},
		{`{"ok":false,"status":"404","problems":[{"level":"SEVERE","message":"x"}]}`, false},
		{`{"ok":false,"status":404.0,"problems":[{"level":"SEVERE","message":"x"}]}`, false},
		{`{"ok":false,"status":99,"problems":[{"level":"SEVERE","message":"x"}]}`, false},
		{`{"ok":false,"status":404,"problems":[]}`, false},
		{`{"ok":false,"status":404,"problems":[{"level":"severe","message":"x"}]}`, false},
		{`{"ok":false,"status":404,"problems":[{"level":"SEVERE","message":""}]}`, false},
		{`{"ok":false,"status":404,"problems":[{"level":"SEVERE"}]}`, false},
		{`{"ok":false,"status":404,"problems":[{"level":"SEVERE","message":"x","extra":"y"}]}`, false},
		{`{"ok":false,"status":404,"problems":[{"level":"SEVERE","message":"x","message":"y"}]}`, false},
		{`{"ok":false,"status":404,"problems":[{"level":"SEVERE","message":"x","code":7}]}`, false},
		{`{"ok":false,"status":404,"ok":false,"problems":[{"level":"SEVERE","message":"x"}]}`, false},
		{`{"ok":false,"status":404,"problems":[{"level":"SEVERE","message":"x"}],"trace":"1"}`, false},
		{`{"ok":false,"status":404,"problems":[{"level":"SEVERE","message":"x"}]} trailing`, false},
		{`{"ok":false,"status":404,"problems":[{"level":"SEVERE","message":"x"}]`, false},
		{"{\"ok\":false,\"status\":404,\"problems\":[{\"level\":\"SEVERE\",\"message\":\"\xff\"}]}", false},
		{``, false},
		{`[]`, false},
	} {
		if got := IsProblems([]byte(tc.body)); got != tc.want {
			t.Errorf("IsProblems(%s) = %v, want %v", tc.body, got, tc.want)
		}
	}
}

func TestAppendRFC9457(t *testing.T) {
	type doc struct {
		Type     string             `json:"type"`
		Title    string             `json:"title"`
		Status   int                `json:"status"`
		Detail   string             `json:"detail"`
		Problems []problems.Problem `json:"problems"`
	}
	for _, tc := range []struct {
		name   string
		status int
		ps     []problems.Problem
		want   doc
	}{
		{
			name: "catalogue code", status: 502,
			ps: []problems.Problem{p("", "Bad Gateway"), pl(problems.Warning, "x", `quote " and <tag>`)},
			want: doc{
				Type: "urn:tollgate:problem:upstream_error", Title: "Bad Gateway", Status: 502, Detail: "Bad Gateway",
				Problems: []problems.Problem{p("", "Bad Gateway"), pl(problems.Warning, "x", `quote " and <tag>`)},
			},
		},
		{
			name: "upstream code", status: 422,
			ps: []problems.Problem{pc("too_young", "age", "must be at least 18")},
			want: doc{
				Type: "about:blank", Title: "Unprocessable Entity", Status: 422, Detail: "must be at least 18",
				Problems: []problems.Problem{pc("too_young", "age", "must be at least 18")},
			},
		},
		{
			name: "no problems, unknown status", status: 599,
			want: doc{Type: "about:blank", Title: "upstream error", Status: 599, Detail: "upstream error", Problems: []problems.Problem{}},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out := AppendRFC9457([]byte("prefix:"), tc.status, tc.ps)
			rest, ok := bytes.CutPrefix(out, []byte("prefix:"))
			if !ok {
				t.Fatalf("dst not kept: %s", out)
			}
			if !json.Valid(rest) {
				t.Fatalf("invalid JSON: %s", rest)
			}
			var got doc
			dec := json.NewDecoder(bytes.NewReader(rest))
			dec.DisallowUnknownFields()
			if err := dec.Decode(&got); err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, tc.want) {
				t.Errorf("got %+v\nwant %+v", got, tc.want)
			}
		})
	}
	// The members come in the order RFC 9457 lists them.
	out := string(AppendRFC9457(nil, 404, []problems.Problem{p("", "gone")}))
	want := `{"type":"urn:tollgate:problem:upstream_error","title":"Not Found","status":404,"detail":"gone","problems":[{"level":"SEVERE","code":"upstream_error","message":"gone"}]}`
	if out != want {
		t.Errorf("got  %s\nwant %s", out, want)
	}
}

func TestMaxProblems(t *testing.T) {
	var b strings.Builder
	b.WriteString(`{"errors":[`)
	for i := range 500 {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString(`{"field":"f` + strings.Repeat("x", i%7) + `","message":"m` + string(rune('a'+i%26)) + `"}`)
	}
	b.WriteString(`]}`)
	res := Body(400, "application/json", "", []byte(b.String()), false, Options{})
	if len(res.Problems) > maxProblems {
		t.Errorf("%d problems", len(res.Problems))
	}
	checkResult(t, 400, Options{}, res)
}

func TestMaxBody(t *testing.T) {
	// A caller that did not cut the body: Body cuts it, and the cut JSON
	// still gives its complete messages.
	body := []byte(`{"message":"first","errors":["` + strings.Repeat("x", 100) + `"]}`)
	res := Body(400, "application/json", "", body, false, Options{MaxBody: 40})
	if want := []problems.Problem{p("", "first")}; !reflect.DeepEqual(res.Problems, want) {
		t.Errorf("got %#v, want %#v", res.Problems, want)
	}
}

func TestParseJSONDepth(t *testing.T) {
	deep := strings.Repeat("[", 10000) + strings.Repeat("]", 10000)
	if _, err := parseJSON([]byte(deep)); err != errSyntax {
		t.Errorf("deep nesting: err = %v, want errSyntax", err)
	}
	res := Body(500, "application/json", "", []byte(`{"a":`+deep+`}`), false, Options{})
	if want := []problems.Problem{p("", "Internal Server Error")}; !reflect.DeepEqual(res.Problems, want) {
		t.Errorf("got %#v", res.Problems)
	}
}

func TestParseJSONAgreesWithEncodingJSON(t *testing.T) {
	for _, s := range []string{
		`{}`, `[]`, `""`, `0`, `-0.5e+10`, `true`, `null`, `{"a":[1,2,{"b":"c"}]}`,
		`"\u00e9\n\"\\\/"`, `01`, `1.`, `.5`, `-`, `+1`, `tru`, `nul`, `{"a" 1}`, `{"a":1,}`, `[1,]`,
		`{"a":1}x`, "\"a\x01\"", `"\x"`, `"\u12g4"`, `{1:2}`, `[1 2]`, ` [ ] `,
	} {
		_, err := parseJSON([]byte(s))
		if (err == nil) != json.Valid([]byte(s)) {
			t.Errorf("parseJSON(%s): err = %v, json.Valid = %v", s, err, json.Valid([]byte(s)))
		}
	}
}

func FuzzBody(f *testing.F) {
	for _, tc := range bodyCases {
		if len(tc.body) > 4096 {
			continue // the bomb: the fuzzer mutates small inputs better
		}
		f.Add(uint16(tc.status), tc.ct, tc.ce, tc.body, tc.truncated, uint16(tc.o.MaxMessage), uint16(tc.o.MaxBody))
	}
	f.Fuzz(func(t *testing.T, status uint16, ct, ce string, body []byte, truncated bool, maxMessage, maxBody uint16) {
		o := Options{MaxMessage: int(maxMessage), MaxBody: int(maxBody)}
		res := Body(int(status), ct, ce, body, truncated, o)
		checkResult(t, int(status), o, res)
		if res.Already && !bytes.HasPrefix(body, gzipMagic) && !IsProblems(body) {
			t.Errorf("Already for a body IsProblems refuses: %q", body)
		}
		if out := AppendRFC9457(nil, int(status), res.Problems); !json.Valid(out) {
			t.Errorf("AppendRFC9457 gave invalid JSON: %s", out)
		}
	})
}

var benchBody = []byte(`{"type":"https://example.net/validation-error","title":"Your request is not valid.","status":422,"errors":[{"detail":"must be a positive integer","pointer":"#/age"},{"detail":"must be 'green', 'red' or 'blue'","pointer":"#/profile/color"}]}`)

func BenchmarkBody(b *testing.B) {
	b.ReportAllocs()
	b.SetBytes(int64(len(benchBody)))
	for b.Loop() {
		Body(422, "application/problem+json", "", benchBody, false, Options{})
	}
}

// TestEveryPrefix cuts every JSON body of the table at every byte, as a
// caller truncating at MaxBody would: no panic, and the result holds.
func TestEveryPrefix(t *testing.T) {
	for _, tc := range bodyCases {
		if tc.ce != "" || len(tc.body) == 0 || (tc.body[0] != '{' && tc.body[0] != '[') {
			continue
		}
		for i := range len(tc.body) {
			res := Body(tc.status, tc.ct, "", tc.body[:i], true, Options{})
			checkResult(t, tc.status, Options{}, res)
			if !json.Valid(tc.body) {
				continue
			}
			if _, err := parseJSON(tc.body[:i]); err == errSyntax {
				t.Errorf("%s: prefix %q is a syntax error, not a cut", tc.name, tc.body[:i])
			}
		}
	}
}

// FuzzParseJSON holds the parser to encoding/json: the same inputs are
// valid, and no prefix of a valid input is a syntax error.
func FuzzParseJSON(f *testing.F) {
	for _, tc := range bodyCases {
		if tc.ce == "" && len(tc.body) < 4096 {
			f.Add(tc.body)
		}
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		if bytes.Count(data, []byte("["))+bytes.Count(data, []byte("{")) >= maxDepth {
			return // deeper than the parser goes on purpose
		}
		_, err := parseJSON(data)
		valid := json.Valid(data)
		if (err == nil) != valid {
			t.Fatalf("parseJSON(%q): err = %v, json.Valid = %v", data, err, valid)
		}
		if !valid {
			return
		}
		for i := range len(data) {
			if _, err := parseJSON(data[:i]); err == errSyntax {
				t.Fatalf("prefix %q of valid %q is a syntax error", data[:i], data)
			}
		}
	})
}
