package config

import (
	"testing"

	"github.com/tollgate/tollgate/internal/access"
)

// TestOutcomesParse: refund_on, mode and over_limit on plans and routes.
func TestOutcomesParse(t *testing.T) {
	text := `plans:
  pro:
    monthly_requests: 1000
    refund_on: [503, 5xx, upstream_timeout]
    over_limit: {allow: 10%}
  trial: {monthly_requests: 50, mode: shadow, over_limit: refuse}
  fixed: {monthly_requests: 50, over_limit: {allow: 7}}
routes:
  - {path_prefix: /a, upstream: http://127.0.0.1:1, auth: [api_key], refund_on: [], mode: enforce}
  - {path_prefix: /b, upstream: http://127.0.0.1:1, auth: [api_key]}
`
	c, err := parseString(t, text, nil)
	if err != nil {
		t.Fatal(err)
	}
	pro := c.Plans["pro"]
	if !pro.Refunds.Has(503, access.FailureNone) || !pro.Refunds.Has(599, access.FailureNone) ||
		pro.Refunds.Has(404, access.FailureNone) || !pro.Refunds.Has(504, access.FailureTimeout) ||
		pro.Refunds.Has(200, access.FailureUnreachable) {
		t.Errorf("pro's refund set is wrong: %+v", pro.Refunds)
	}
	if got := pro.OverLimit.For(1000); got != 100 {
		t.Errorf("10%% of 1000 = %d", got)
	}
	if got := pro.OverLimit.For(16000); got != 1600 {
		t.Errorf("10%% of a granted 16000 = %d", got)
	}
	if c.Plans["trial"].Mode != "shadow" || c.Plans["trial"].OverLimit.For(50) != 0 || pro.Mode != "enforce" {
		t.Errorf("modes: trial %q, pro %q", c.Plans["trial"].Mode, pro.Mode)
	}
	if got := c.Plans["fixed"].OverLimit.For(50); got != 7 {
		t.Errorf("allow 7 = %d", got)
	}
	if r := c.Routes[0]; r.Refunds == nil || !r.Refunds.Empty() || r.LimitMode != access.ModeEnforce {
		t.Errorf("route /a: refunds %+v, mode %v; want an empty set of its own and enforce", r.Refunds, r.LimitMode)
	}
	if r := c.Routes[1]; r.Refunds != nil || r.LimitMode != access.ModePlan {
		t.Errorf("route /b takes its plan's: %+v %v", r.Refunds, r.LimitMode)
	}
}

func TestOutcomesInvalid(t *testing.T) {
	text := `plans:
  pro:
    monthly_requests: 1000
    refund_on: [200, 7xx, teapot]
    mode: lenient
    over_limit: {allow: 20 percent}
  free:
    monthly_requests: 0
    over_limit: {allow: 10%}
  odd:
    monthly_requests: 5
    over_limit: sometimes
routes:
  - {path_prefix: /, upstream: http://127.0.0.1:1, auth: [api_key], mode: loud, refund_on: [99]}
`
	_, err := parseString(t, text, nil)
	if err == nil {
		t.Fatal("no error")
	}
	checkProblems(t, problemsOf(t, err), []wantProblem{
		{4, "plans.pro.refund_on[0]", "only error answers"},
		{4, "plans.pro.refund_on[1]", "want a status"},
		{4, "plans.pro.refund_on[2]", "want a status"},
		{5, "plans.pro.mode", `"lenient": want enforce or shadow`},
		{6, "plans.pro.over_limit.allow", "want a share of the limit"},
		{9, "plans.free.over_limit", "unlimited plan"},
		{12, "plans.odd.over_limit", `"sometimes": want refuse or {allow: 10%}`},
		{14, "routes[0].mode", `"loud": want enforce or shadow`},
		{14, "routes[0].refund_on[0]", "want a status"},
	})
}
