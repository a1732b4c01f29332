package tenants

import (
	"net/url"
	"sort"
	"strconv"
	"strings"

	"github.com/tollgate/tollgate/internal/problems"
)

// Page selects a page of a list: the admin API's position, size, orderBy
// and desc query parameters, typed.
type Page struct {
	Position int
	Size     int // 1 to 1000
	OrderBy  string
	Desc     bool
}

// List is the paginated answer of every list endpoint.
type List[T any] struct {
	Total    int    `json:"total"`
	Position int    `json:"position"`
	Size     int    `json:"size"`
	OrderBy  string `json:"orderBy"`
	Desc     bool   `json:"desc"`
	Items    []T    `json:"items"`
}

// ParsePage reads position, size and desc from q, and orderBy (default
// orderBy); size defaults to 50. Whether orderBy names an order is checked
// by Paginate.
func ParsePage(q url.Values, orderBy string) (Page, error) {
	p := Page{OrderBy: orderBy, Size: 50}
	var err error
	if v := q.Get("position"); v != "" {
		if p.Position, err = strconv.Atoi(v); err != nil || p.Position < 0 {
			return p, problems.New(400, problems.CodeInvalidField, "position", "want an integer ≥ 0")
		}
	}
	if v := q.Get("size"); v != "" {
		if p.Size, err = strconv.Atoi(v); err != nil || p.Size < 1 || p.Size > 1000 {
			return p, problems.New(400, problems.CodeInvalidField, "size", "want an integer from 1 to 1000")
		}
	}
	if v := q.Get("desc"); v != "" {
		if p.Desc, err = strconv.ParseBool(v); err != nil {
			return p, problems.New(400, problems.CodeInvalidField, "desc", "want true or false")
		}
	}
	if v := q.Get("orderBy"); v != "" {
		p.OrderBy = v
	}
	return p, nil
}

// Paginate sorts items (in place) by p.OrderBy, one of the keys of less,
// and cuts the page p selects.
func Paginate[T any](items []T, p Page, less map[string]func(a, b T) bool) (List[T], error) {
	l := List[T]{Position: p.Position, Size: p.Size, OrderBy: p.OrderBy, Desc: p.Desc}
	f, ok := less[p.OrderBy]
	if !ok {
		names := make([]string, 0, len(less))
		for k := range less {
			names = append(names, k)
		}
		sort.Strings(names)
		return l, problems.Newf(400, problems.CodeInvalidField, "orderBy", "want one of %s", strings.Join(names, ", "))
	}
	sort.SliceStable(items, func(i, j int) bool {
		if p.Desc {
			return f(items[j], items[i])
		}
		return f(items[i], items[j])
	})
	l.Total = len(items)
	start := min(max(p.Position, 0), len(items))
	end := min(start+max(p.Size, 0), len(items))
	l.Items = items[start:end]
	if l.Items == nil {
		l.Items = []T{}
	}
	return l, nil
}
