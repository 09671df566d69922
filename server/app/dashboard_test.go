package app

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strings"
	"testing"

	"github.com/medops/medops/api/v1alpha1"
	"github.com/medops/medops/internal/repo"
)

// The Grafana dashboard the chart ships (grafanaDashboard.enabled) queries
// medops-api's metrics by name. TestDashboardQueriesOnlyExportedMetrics
// keeps the two from drifting apart: every metric a panel or variable asks
// for must be one a real medops-api exports.
var dashboardFile = filepath.Join(repo.Root(), "charts", "medops-operator", "dashboards", "medops-api.json")

type dashPanel struct {
	Title   string      `json:"title"`
	Type    string      `json:"type"`
	Panels  []dashPanel `json:"panels"`
	Targets []struct {
		Expr string `json:"expr"`
	} `json:"targets"`
}

// dashboardQueries returns every PromQL expression of the dashboard by
// where it sits, and the metrics its label_values() variables read.
func dashboardQueries(t *testing.T) (exprs map[string]string, varMetrics []string) {
	t.Helper()
	b, err := os.ReadFile(dashboardFile)
	if err != nil {
		t.Fatal(err)
	}
	var d struct {
		UID        string      `json:"uid"`
		Panels     []dashPanel `json:"panels"`
		Templating struct {
			List []struct {
				Name       string `json:"name"`
				Definition string `json:"definition"`
			} `json:"list"`
		} `json:"templating"`
	}
	if err := json.Unmarshal(b, &d); err != nil {
		t.Fatalf("%s: %v", dashboardFile, err)
	}
	if d.UID == "" {
		t.Error("the dashboard has no uid: every import would make a new copy")
	}
	exprs = map[string]string{}
	var walk func([]dashPanel)
	walk = func(ps []dashPanel) {
		for _, p := range ps {
			walk(p.Panels)
			if p.Type == "row" {
				continue
			}
			if len(p.Targets) == 0 {
				t.Errorf("panel %q queries nothing", p.Title)
			}
			for i, tg := range p.Targets {
				exprs[fmt.Sprintf("panel %q target %d", p.Title, i)] = tg.Expr
			}
		}
	}
	walk(d.Panels)
	labelValues := regexp.MustCompile(`^label_values\(\s*([a-zA-Z_:][a-zA-Z0-9_:]*)`)
	for _, v := range d.Templating.List {
		if m := labelValues.FindStringSubmatch(v.Definition); m != nil {
			varMetrics = append(varMetrics, m[1])
		}
	}
	return exprs, varMetrics
}

var (
	promStrings  = regexp.MustCompile(`"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*'|` + "`[^`]*`")
	promBraces   = regexp.MustCompile(`\{[^}]*\}|\[[^\]]*\]`)
	promGrouping = regexp.MustCompile(`\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)`)
	// One token at a time, left to right: numbers (hex, durations such as
	// 1h30m, floats such as 1e-9) are matched whole so that their letters
	// are not taken for names.
	promToken    = regexp.MustCompile(`0[xX][0-9a-fA-F]+|(?:\d+(?:ms|[smhdwy]))+|\d+\.?\d*(?:[eE][-+]?\d+)?|\$?[a-zA-Z_:][a-zA-Z0-9_:]*\s*\(?`)
	promKeywords = map[string]bool{
		"and": true, "or": true, "unless": true, "bool": true, "offset": true, "inf": true, "nan": true,
		"by": true, "without": true, "on": true, "ignoring": true, "group_left": true, "group_right": true,
		"sum": true, "min": true, "max": true, "avg": true, "count": true, "stddev": true, "stdvar": true,
		"group": true, "topk": true, "bottomk": true, "quantile": true, "count_values": true,
	}
)

// promMetricNames lists the metric names a PromQL expression selects: the
// identifiers left once strings, label matchers, ranges, grouping labels,
// numbers, function calls, keywords and Grafana variables are taken out.
func promMetricNames(expr string) []string {
	s := promStrings.ReplaceAllString(expr, " ")
	s = promBraces.ReplaceAllString(s, " ")
	s = promGrouping.ReplaceAllString(s, " ")
	var out []string
	for _, tok := range promToken.FindAllString(s, -1) {
		if tok[0] >= '0' && tok[0] <= '9' || strings.HasSuffix(tok, "(") || tok[0] == '$' {
			continue // a number, a function or aggregation call, or a Grafana variable
		}
		tok = strings.TrimSpace(tok)
		if promKeywords[strings.ToLower(tok)] || slices.Contains(out, tok) {
			continue
		}
		out = append(out, tok)
	}
	return out
}

func TestPromMetricNames(t *testing.T) {
	for _, tc := range []struct {
		expr string
		want []string
	}{
		{`up`, []string{"up"}},
		{`sum by (route, code) (rate(medops_http_requests_total{namespace=~"$namespace", code=~"5.."}[$__rate_interval]))`,
			[]string{"medops_http_requests_total"}},
		{`histogram_quantile(0.99, sum without (pod) (rate(a_bucket{x="sum(b)"}[5m])))`, []string{"a_bucket"}},
		{`sum(rate(hits[1m])) / (sum(rate(hits[1m])) + sum(rate(misses[1m]))) > 1e-9`, []string{"hits", "misses"}},
		{`a / on (pod) group_left (node) kube_pod_info offset 5m`, []string{"a", "kube_pod_info"}},
		{`count(x) by (y) and bool z unless 0x1F`, []string{"x", "z"}},
		{`max by(le)(rate(c:rule:sum[$__range]))`, []string{"c:rule:sum"}},
	} {
		if got := promMetricNames(tc.expr); !slices.Equal(got, tc.want) {
			t.Errorf("promMetricNames(%q) = %v, want %v", tc.expr, got, tc.want)
		}
	}
}

// exportedSeries scrapes /metrics and returns every series name it can
// carry: a histogram family h exports h_bucket, h_sum and h_count.
func exportedSeries(t *testing.T, e *testEnv) map[string]bool {
	t.Helper()
	r := e.do(t, "GET", "/metrics", "")
	if r.status != 200 {
		t.Fatalf("/metrics: %d", r.status)
	}
	out := map[string]bool{}
	for _, line := range strings.Split(string(r.body), "\n") {
		f := strings.Fields(line)
		if len(f) != 4 || f[0] != "#" || f[1] != "TYPE" {
			continue
		}
		name := f[2]
		out[name] = true
		if f[3] == "histogram" || f[3] == "summary" {
			out[name+"_sum"], out[name+"_count"] = true, true
		}
		if f[3] == "histogram" {
			out[name+"_bucket"] = true
		}
	}
	return out
}

func TestDashboardQueriesOnlyExportedMetrics(t *testing.T) {
	// An upstream that answers, fails and rate-limits, so that every
	// labelled gateway series exists.
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch {
		case strings.HasPrefix(r.URL.Path, "/limited/"):
			w.Header().Set("Retry-After", "60")
			w.WriteHeader(http.StatusTooManyRequests)
		case r.URL.Path == "/rest/fail":
			w.WriteHeader(http.StatusInternalServerError)
		default:
			w.Header().Set("Content-Type", "application/json")
			fmt.Fprint(w, `{"ok":true}`)
		}
	}))
	t.Cleanup(up.Close)
	e := newTestEnv(t, func(c *v1alpha1.WorkloadConfig) {
		withGateway(up.URL)(c)
		c.Modules.Gateway.Upstreams = append(c.Modules.Gateway.Upstreams, v1alpha1.Upstream{Name: "limited", URL: up.URL + "/limited"})
		c.Modules.SetDefaults()
	})
	tk := e.create(t, `{"title":"scrape me"}`)
	for _, step := range []struct {
		method, path string
		status       int
	}{
		{"GET", "/api/v1/tasks/" + tk.ID, 200},
		{"GET", "/api/v1/tasks/" + tk.ID, 200}, // a cache hit
		{"PATCH", "/api/v1/tasks/" + tk.ID, 200},
		{"GET", "/api/v1/tasks", 200},
		{"GET", "/api/v1/gateway/ensembl/ok", 200},
		{"GET", "/api/v1/gateway/ensembl/fail", 502},
		{"GET", "/api/v1/gateway/limited/x", 429}, // the upstream's 429
		{"GET", "/api/v1/gateway/limited/x", 429}, // the gateway's own, until Retry-After
		{"DELETE", "/api/v1/tasks/" + tk.ID, 204},
	} {
		body := ""
		if step.method == "PATCH" {
			body = `{"status":"done"}`
		}
		if r := e.do(t, step.method, step.path, body); r.status != step.status {
			t.Fatalf("%s %s: %d %s, want %d", step.method, step.path, r.status, r.body, step.status)
		}
	}
	exported := exportedSeries(t, e)

	exprs, varMetrics := dashboardQueries(t)
	if len(exprs) < 10 {
		t.Fatalf("found only %d queries in %s", len(exprs), dashboardFile)
	}
	used := map[string]bool{}
	for where, expr := range exprs {
		names := promMetricNames(expr)
		if len(names) == 0 {
			t.Errorf("%s selects no metric: %s", where, expr)
		}
		for _, n := range names {
			used[n] = true
			if !exported[n] {
				t.Errorf("%s queries %s, which medops-api does not export: %s", where, n, expr)
			}
		}
	}
	for _, n := range varMetrics {
		if !exported[n] {
			t.Errorf("a dashboard variable reads %s, which medops-api does not export", n)
		}
	}
	// What the dashboard is for (issue: requests by route and code, latency,
	// cache hit ratio and bytes, upstream errors, rate limiting, store
	// latency, pods ready): each must have a panel.
	for _, n := range []string{
		"medops_http_requests_total", "medops_http_request_duration_seconds_bucket",
		"medops_cache_hits_total", "medops_cache_misses_total", "medops_cache_bytes",
		"medops_gateway_requests_total", "medops_gateway_rate_limited_total",
		"medops_store_operation_duration_seconds_bucket", "medops_ready",
	} {
		if !used[n] {
			t.Errorf("no panel shows %s", n)
		}
	}
	if t.Failed() {
		names := make([]string, 0, len(exported))
		for n := range exported {
			names = append(names, n)
		}
		sort.Strings(names)
		t.Logf("exported: %v", names)
	}
}
