package config

import (
	"fmt"
	"net/url"
	"slices"
	"strconv"
	"strings"
)

// checkNotify validates a plan's notify block at path and fills in its
// parsed fields.
func checkNotify(path string, n *Notify, add func(path, format string, args ...any)) {
	n.Percents = n.Percents[:0]
	for i, a := range n.At {
		p := fmt.Sprintf("%s.at[%d]", path, i)
		num, ok := strings.CutSuffix(strings.TrimSpace(a), "%")
		v, err := strconv.ParseInt(num, 10, 64)
		if !ok || err != nil || v < 1 || v > 1000 {
			add(p, "%q: want a whole percentage of the monthly limit from 1%% to 1000%%, e.g. \"80%%\"", a)
			continue
		}
		if slices.Contains(n.Percents, v) {
			add(p, "%q: listed twice", a)
			continue
		}
		n.Percents = append(n.Percents, v)
	}
	slices.Sort(n.Percents)
	u, err := url.Parse(n.URL)
	switch {
	case n.URL == "":
		add(path+".url", "required: where the webhooks are sent (http or https)")
	case err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "":
		add(path+".url", "%q: want an http or https URL", redactUserinfo(n.URL))
	}
	switch {
	case n.Secret == "":
		add(path+".secret", "required: the key that signs the webhooks (write it as ${VAR}; is the variable set?)")
	case len(n.Secret) < 16:
		add(path+".secret", "must be at least 16 characters")
	}
	n.Kinds = map[string]bool{}
	if n.Events == nil {
		for _, k := range NotifyKinds {
			n.Kinds[k] = true
		}
	}
	for i, e := range n.Events {
		p := fmt.Sprintf("%s.events[%d]", path, i)
		switch {
		case !slices.Contains(NotifyKinds, e):
			add(p, "%q: want one of %s", e, strings.Join(NotifyKinds, ", "))
		case n.Kinds[e]:
			add(p, "%q: listed twice", e)
		default:
			n.Kinds[e] = true
		}
	}
	if len(n.At) > 0 && n.Events != nil && !n.Kinds["usage_threshold"] {
		add(path+".at", "thresholds are set but events does not list usage_threshold")
	}
}

// redactUserinfo drops the user information of a URL for a message.
func redactUserinfo(s string) string {
	if u, err := url.Parse(s); err == nil && u.User != nil {
		u.User = nil
		return u.String()
	}
	return s
}
