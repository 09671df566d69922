package v1alpha1

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

func TestWorkloadConfigDefaults(t *testing.T) {
	var w WorkloadConfig
	w.SetDefaults()
	if errs := w.Validate(); len(errs) != 0 {
		t.Fatalf("defaults do not validate: %v", errs.ToAggregate())
	}
	checks := []struct {
		name      string
		got, want any
	}{
		{"listen", w.Listen, DefaultListen},
		{"dataDir", w.DataDir, DefaultDataDir},
		{"logLevel", w.LogLevel, "info"},
		{"tasks enabled", w.Modules.TasksEnabled(), true},
		{"gateway enabled", w.Modules.GatewayEnabled(), false},
		{"cache enabled", w.Cache.IsEnabled(), true},
		{"cache size", w.Cache.Size.String(), "64Mi"},
		{"cache ttl", w.Cache.TTL.Duration, 5 * time.Minute},
		{"cache shards", *w.Cache.Shards, int32(16)},
		{"max entry size", w.Cache.MaxEntrySize.String(), "1Mi"},
		{"stale if error", w.Cache.StaleIfError.Duration, 10 * time.Minute},
		{"max body size", w.Server.MaxBodySize.String(), "1Mi"},
		{"max retry after", w.Modules.Gateway.MaxRetryAfter.Duration, 5 * time.Minute},
		{"task reads need the token", w.Modules.TasksAnonymousReads(), false},
		{"gateway reads are anonymous", w.Modules.GatewayAnonymousReads(), true},
	}
	for _, c := range checks {
		if c.got != c.want {
			t.Errorf("%s = %v, want %v", c.name, c.got, c.want)
		}
	}
	// Defaulting twice changes nothing: the operator defaults before it
	// renders and the workload defaults again after it loads.
	before := w.DeepCopy()
	w.SetDefaults()
	if before.Cache.Size.Cmp(*w.Cache.Size) != 0 || *before.Cache.Shards != *w.Cache.Shards {
		t.Errorf("SetDefaults is not idempotent")
	}
}

func TestRateLimitDefaults(t *testing.T) {
	var w WorkloadConfig
	w.Modules.Gateway.Upstreams = []Upstream{
		{Name: "a", URL: "https://a.example", RateLimit: &RateLimit{RequestsPerSecond: 15}},
		{Name: "b", URL: "https://b.example", RateLimit: &RateLimit{RequestsPerSecond: 15, Burst: ptr(int32(4)), MaxWait: &metav1.Duration{}}},
		{Name: "c", URL: "https://c.example"},
	}
	w.SetDefaults()
	if errs := w.Validate(); len(errs) != 0 {
		t.Fatalf("defaulted rate limits do not validate: %v", errs.ToAggregate())
	}
	ups := w.Modules.Gateway.Upstreams
	if rl := ups[0].RateLimit; *rl.Burst != DefaultRateLimitBurst || rl.MaxWait.Duration != DefaultRateLimitMaxWait {
		t.Errorf("defaulted rateLimit = burst %d maxWait %s, want %d and %s", *rl.Burst, rl.MaxWait.Duration, DefaultRateLimitBurst, DefaultRateLimitMaxWait)
	}
	if rl := ups[1].RateLimit; *rl.Burst != 4 || rl.MaxWait.Duration != 0 {
		t.Errorf("set rateLimit changed by defaulting: burst %d maxWait %s", *rl.Burst, rl.MaxWait.Duration)
	}
	if ups[2].RateLimit != nil {
		t.Errorf("an upstream without rateLimit got one: %+v", ups[2].RateLimit)
	}
}

func TestWorkloadConfigValidate(t *testing.T) {
	q := func(s string) *resource.Quantity { v := resource.MustParse(s); return &v }
	d := func(v time.Duration) *metav1.Duration { return &metav1.Duration{Duration: v} }
	i32 := func(v int32) *int32 { return &v }
	on := func() *bool { v := true; return &v }
	tests := []struct {
		name      string
		mutate    func(*WorkloadConfig)
		wantField string
		wantMsg   string
	}{
		{"log level", func(w *WorkloadConfig) { w.LogLevel = "loud" }, "logLevel", "Unsupported value"},
		{"shards not power of two", func(w *WorkloadConfig) { w.Cache.Shards = i32(3) }, "cache.shards", "power of two"},
		{"shards too many", func(w *WorkloadConfig) { w.Cache.Shards = i32(2048) }, "cache.shards", "power of two"},
		{"entry larger than a shard", func(w *WorkloadConfig) {
			w.Cache.Size, w.Cache.Shards, w.Cache.MaxEntrySize = q("16Mi"), i32(64), q("512Ki")
		}, "cache.maxEntrySize", "must fit in one cache shard: size/shards is 256Ki"},
		{"size zero", func(w *WorkloadConfig) { w.Cache.Size = q("0") }, "cache.size", "must be positive"},
		{"size too big", func(w *WorkloadConfig) { w.Cache.Size = q("9Gi") }, "cache.size", "at most 8Gi"},
		{"size under a MiB", func(w *WorkloadConfig) { w.Cache.Size = q("512Ki") }, "cache.size", "at least 1Mi"},
		{"ttl zero", func(w *WorkloadConfig) { w.Cache.TTL = d(0) }, "cache.ttl", "must be positive"},
		{"rule without slash", func(w *WorkloadConfig) {
			w.Cache.Rules = []CacheRule{{PathPrefix: "api", TTL: metav1.Duration{Duration: time.Second}}}
		}, "cache.rules[0].pathPrefix", "must start with /"},
		{"gateway without upstreams", func(w *WorkloadConfig) { w.Modules.Gateway.Enabled = on() }, "modules.gateway.upstreams", "at least one upstream"},
		{"upstream relative url", func(w *WorkloadConfig) {
			w.Modules.Gateway.Upstreams = []Upstream{{Name: "ensembl", URL: "/rest"}}
		}, "modules.gateway.upstreams[0].url", "absolute http or https"},
		{"upstream ftp url", func(w *WorkloadConfig) {
			w.Modules.Gateway.Upstreams = []Upstream{{Name: "ensembl", URL: "ftp://rest.example"}}
		}, "modules.gateway.upstreams[0].url", "absolute http or https"},
		{"upstream with credentials", func(w *WorkloadConfig) {
			w.Modules.Gateway.Upstreams = []Upstream{{Name: "e", URL: "https://u:p@rest.example"}}
		}, "modules.gateway.upstreams[0].url", "credentials"},
		{"duplicate upstream", func(w *WorkloadConfig) {
			w.Modules.Gateway.Upstreams = []Upstream{{Name: "e", URL: "https://a.example"}, {Name: "e", URL: "https://b.example"}}
		}, "modules.gateway.upstreams[1].name", "Duplicate value"},
		{"upstream timeout zero", func(w *WorkloadConfig) {
			w.Modules.Gateway.Upstreams = []Upstream{{Name: "e", URL: "https://a.example", Timeout: d(0)}}
		}, "modules.gateway.upstreams[0].timeout", "must be positive"},
		{"upstream response timeout zero", func(w *WorkloadConfig) {
			w.Modules.Gateway.Upstreams = []Upstream{{Name: "e", URL: "https://a.example", ResponseTimeout: d(0)}}
		}, "modules.gateway.upstreams[0].responseTimeout", "must be positive"},
		{"mirror relative url", func(w *WorkloadConfig) {
			w.Modules.Gateway.Upstreams = []Upstream{{Name: "e", URL: "https://a.example", Mirrors: []Mirror{{URL: "https://b.example"}, {URL: "/rest"}}}}
		}, "modules.gateway.upstreams[0].mirrors[1].url", "absolute http or https"},
		{"mirror same as url", func(w *WorkloadConfig) {
			w.Modules.Gateway.Upstreams = []Upstream{{Name: "e", URL: "https://a.example", Mirrors: []Mirror{{URL: "https://a.example"}}}}
		}, "modules.gateway.upstreams[0].mirrors[0].url", "Duplicate value"},
		{"duplicate mirror", func(w *WorkloadConfig) {
			w.Modules.Gateway.Upstreams = []Upstream{{Name: "e", URL: "https://a.example", Mirrors: []Mirror{{URL: "https://b.example"}, {URL: "https://b.example"}}}}
		}, "modules.gateway.upstreams[0].mirrors[1].url", "Duplicate value"},
		{"mirror region", func(w *WorkloadConfig) {
			w.Modules.Gateway.Upstreams = []Upstream{{Name: "e", URL: "https://a.example", Mirrors: []Mirror{{URL: "https://b.example", Region: "eu west"}}}}
		}, "modules.gateway.upstreams[0].mirrors[0].region", "alphanumeric"},
		{"upstream region", func(w *WorkloadConfig) {
			w.Modules.Gateway.Upstreams = []Upstream{{Name: "e", URL: "https://a.example", Region: "us/east"}}
		}, "modules.gateway.upstreams[0].region", "alphanumeric"},
		{"too many mirrors", func(w *WorkloadConfig) {
			var ms []Mirror
			for i := range 9 {
				ms = append(ms, Mirror{URL: fmt.Sprintf("https://m%d.example", i)})
			}
			w.Modules.Gateway.Upstreams = []Upstream{{Name: "e", URL: "https://a.example", Mirrors: ms}}
		}, "modules.gateway.upstreams[0].mirrors", "must have at most 8 items"},
		{"rate limit zero", func(w *WorkloadConfig) {
			w.Modules.Gateway.Upstreams = []Upstream{{Name: "e", URL: "https://a.example", RateLimit: &RateLimit{}}}
		}, "modules.gateway.upstreams[0].rateLimit.requestsPerSecond", "between 1 and 10000"},
		{"rate limit burst zero", func(w *WorkloadConfig) {
			w.Modules.Gateway.Upstreams = []Upstream{{Name: "e", URL: "https://a.example", RateLimit: &RateLimit{RequestsPerSecond: 15, Burst: ptr(int32(0))}}}
		}, "modules.gateway.upstreams[0].rateLimit.burst", "between 1 and 10000"},
		{"rate limit max wait", func(w *WorkloadConfig) {
			w.Modules.Gateway.Upstreams = []Upstream{{Name: "e", URL: "https://a.example", RateLimit: &RateLimit{RequestsPerSecond: 15, MaxWait: d(2 * time.Minute)}}}
		}, "modules.gateway.upstreams[0].rateLimit.maxWait", "between 0 and 1m0s"},
		{"upstream response timeout under the timeout", func(w *WorkloadConfig) {
			w.Modules.Gateway.Upstreams = []Upstream{{Name: "e", URL: "https://a.example", Timeout: d(time.Minute), ResponseTimeout: d(30 * time.Second)}}
		}, "modules.gateway.upstreams[0].responseTimeout", "must not be shorter than timeout"},
		{"max retry after under a second", func(w *WorkloadConfig) { w.Modules.Gateway.MaxRetryAfter = d(500 * time.Millisecond) },
			"modules.gateway.maxRetryAfter", "at least 1s"},
		{"shared tier with neither addresses nor deploy", func(w *WorkloadConfig) { w.Cache.Shared = &SharedCache{} },
			"cache.shared.memcached.addresses", "needs memcached.addresses or deploy: true"},
		{"shared tier with both", func(w *WorkloadConfig) {
			w.Cache.Shared = &SharedCache{Deploy: true, Memcached: &MemcachedTier{Addresses: []string{"mc:11211"}}}
		}, "cache.shared.deploy", "not both"},
		{"shared tier bad address", func(w *WorkloadConfig) {
			w.Cache.Shared = &SharedCache{Memcached: &MemcachedTier{Addresses: []string{"mc:99999"}}}
		}, "cache.shared.memcached.addresses[0]", "port must be a number"},
		{"shared tier address with a scheme", func(w *WorkloadConfig) {
			w.Cache.Shared = &SharedCache{Memcached: &MemcachedTier{Addresses: []string{"tcp://mc"}}}
		}, "cache.shared.memcached.addresses[0]", "must be host:port"},
		{"shared tier without a key file", func(w *WorkloadConfig) {
			w.Cache.Shared = &SharedCache{Memcached: &MemcachedTier{Addresses: []string{"mc"}}}
		}, "sharedCache.hmacKeyFile", "needs a key file"},
		{"shared tier timeout too long", func(w *WorkloadConfig) { w.Cache.Shared = &SharedCache{Deploy: true, Timeout: d(time.Minute)} },
			"cache.shared.timeout", "at most 5s"},
		{"shared tier too small", func(w *WorkloadConfig) { w.Cache.Shared = &SharedCache{Deploy: true, Size: q("1Mi")} },
			"cache.shared.size", "between 8Mi and 64Gi"},
		{"body size zero", func(w *WorkloadConfig) { w.Server.MaxBodySize = q("0") }, "server.maxBodySize", "must be positive"},
		{"base path relative", func(w *WorkloadConfig) { w.Server.BasePath = "medops" }, "server.basePath", "must start with /"},
		{"base path trailing slash", func(w *WorkloadConfig) { w.Server.BasePath = "/medops/" }, "server.basePath", "must not end with /"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var w WorkloadConfig
			tt.mutate(&w)
			w.SetDefaults()
			errs := w.Validate()
			if len(errs) == 0 {
				t.Fatalf("Validate accepted the config; want an error on %s", tt.wantField)
			}
			var found bool
			for _, e := range errs {
				if e.Field == tt.wantField && strings.Contains(e.Error(), tt.wantMsg) {
					found = true
				}
			}
			if !found {
				t.Errorf("errors %v; want one on %s containing %q", errs.ToAggregate(), tt.wantField, tt.wantMsg)
			}
		})
	}
}
