package config

import "testing"

func TestMetricsTenantLabels(t *testing.T) {
	tests := []struct {
		name string
		text string
		want bool
	}{
		{name: "default off", text: okRoute, want: false},
		{name: "on", text: "metrics: {tenant_labels: true}\n" + okRoute, want: true},
		{name: "off", text: "metrics:\n  tenant_labels: false\n" + okRoute, want: false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := parseString(t, tt.text, nil)
			if err != nil {
				t.Fatal(err)
			}
			if got := c.Metrics.TenantLabels; got != tt.want {
				t.Errorf("metrics.tenant_labels = %v, want %v", got, tt.want)
			}
		})
	}
}

func TestMetricsInvalid(t *testing.T) {
	tests := []struct {
		name string
		text string
		want []wantProblem
	}{
		{name: "not a bool", text: "metrics: {tenant_labels: sometimes}\n" + okRoute,
			want: []wantProblem{{1, "metrics.tenant_labels", "sometimes"}}},
		{name: "unknown key", text: "metrics:\n  tenant_label: true\n" + okRoute,
			want: []wantProblem{{2, "metrics.tenant_label", `unknown key "tenant_label"`}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := parseString(t, tt.text, nil)
			if err == nil {
				t.Fatal("Parse = nil error, want problems")
			}
			checkProblems(t, problemsOf(t, err), tt.want)
		})
	}
}
