package config

import (
	"slices"
	"testing"
)

func TestNotifyParses(t *testing.T) {
	text := `plans:
  pro:
    monthly_requests: 200
    notify: {at: ["100%", "80%", " 110% "], url: "https://billing.internal/hooks/tollgate", secret: "${HOOK_SECRET}"}
  basic:
    notify: {url: "http://127.0.0.1:9000/h", secret: "${HOOK_SECRET}", events: [limit_request_filed]}
` + okRoute
	c, err := parseString(t, text, env(map[string]string{"HOOK_SECRET": "whsec_0123456789abcdef"}))
	if err != nil {
		t.Fatal(err)
	}
	n := c.Plans["pro"].Notify
	if got, want := n.Percents, []int64{80, 100, 110}; !slices.Equal(got, want) {
		t.Errorf("percents = %v, want %v", got, want)
	}
	if n.Secret != "whsec_0123456789abcdef" {
		t.Errorf("secret = %q, want the expanded variable", n.Secret)
	}
	for _, k := range NotifyKinds {
		if !n.Sends(k) {
			t.Errorf("without events, %s is not sent", k)
		}
	}
	b := c.Plans["basic"].Notify
	if !b.Sends("limit_request_filed") || b.Sends("limit_request_decided") || b.Sends("usage_threshold") {
		t.Errorf("events [limit_request_filed] sends %v", b.Kinds)
	}
	var none *Notify
	if none.Sends("usage_threshold") {
		t.Error("a plan without notify sends")
	}
}

func TestNotifyInvalid(t *testing.T) {
	for _, tt := range []struct {
		name string
		text string
		env  map[string]string
		want []wantProblem
	}{
		{
			name: "thresholds",
			text: "plans:\n  pro:\n    notify:\n      at: [\"80\", \"0%\", \"1001%\", \"80%\", \"80%\", \"x%\"]\n      url: https://h.example/x\n      secret: 0123456789abcdef\n",
			want: []wantProblem{
				{4, "plans.pro.notify.at[0]", `"80": want a whole percentage`},
				{4, "plans.pro.notify.at[1]", `"0%": want`},
				{4, "plans.pro.notify.at[2]", `"1001%": want`},
				{4, "plans.pro.notify.at[4]", `"80%": listed twice`},
				{4, "plans.pro.notify.at[5]", `"x%": want`},
			},
		},
		{
			name: "url and secret missing (unset variable)",
			text: "plans:\n  pro:\n    notify:\n      at: [80%]\n      secret: ${HOOK_SECRET}\n",
			want: []wantProblem{
				{3, "plans.pro.notify.url", "required"},
				{5, "plans.pro.notify.secret", "is the variable set?"},
			},
		},
		{
			name: "bad url, short secret",
			text: "plans:\n  pro:\n    notify:\n      at: [80%]\n      url: ftp://u:pw@h/x\n      secret: short\n",
			want: []wantProblem{
				{5, "plans.pro.notify.url", `"ftp://h/x": want an http or https URL`},
				{6, "plans.pro.notify.secret", "at least 16 characters"},
			},
		},
		{
			name: "events",
			text: "plans:\n  pro:\n    notify:\n      at: [80%]\n      url: https://h/x\n      secret: 0123456789abcdef\n      events: [limit_request_filed, bogus, limit_request_filed]\n",
			want: []wantProblem{
				{7, "plans.pro.notify.events[1]", `"bogus": want one of`},
				{7, "plans.pro.notify.events[2]", "listed twice"},
				{4, "plans.pro.notify.at", "does not list usage_threshold"},
			},
		},
	} {
		t.Run(tt.name, func(t *testing.T) {
			_, err := parseString(t, tt.text+okRoute, env(tt.env))
			if err == nil {
				t.Fatal("Parse succeeded; want an error")
			}
			got := problemsOf(t, err)
			checkProblems(t, got, tt.want)
			for _, p := range got {
				if p.File != "c.yaml" {
					t.Errorf("%v: file %q, want c.yaml", p, p.File)
				}
			}
		})
	}
}
