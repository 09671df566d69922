package v1alpha1

import (
	"fmt"
	"net"
	"net/url"
	"strconv"
	"strings"
	"time"

	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/apimachinery/pkg/util/validation/field"
)

// Defaults of the workload configuration. They suit a Raspberry Pi: a small
// cache, few shards and short timeouts. Listen and DataDir default to values
// safe for a person running medops-api by hand (loopback only, a folder in the
// working directory); the operator always renders in-cluster values.
const (
	DefaultListen          = "127.0.0.1:8080"
	DefaultDataDir         = "medops-data"
	DefaultLogLevel        = "info"
	DefaultCacheSize       = "64Mi"
	DefaultCacheTTL        = 5 * time.Minute
	DefaultCacheShards     = int32(16)
	DefaultMaxEntrySize    = "1Mi"
	DefaultStaleIfError    = 10 * time.Minute
	DefaultUpstreamTimeout = 10 * time.Second
	// DefaultUpstreamResponseTimeout stays below the server's 60 s write
	// timeout, so the gateway's JSON 504 still reaches the client.
	DefaultUpstreamResponseTimeout = 30 * time.Second
	DefaultMaxRetryAfter           = 5 * time.Minute
	// DefaultRateLimitBurst spaces calls evenly: the politest default for
	// an upstream that bans clients over its rate.
	DefaultRateLimitBurst = int32(1)
	// DefaultRateLimitMaxWait lets a short queue of misses through at the
	// budget's pace instead of refusing them.
	DefaultRateLimitMaxWait = 2 * time.Second
	// MaxRateLimitMaxWait bounds rateLimit.maxWait.
	MaxRateLimitMaxWait = time.Minute
	// MaxMirrors bounds an upstream's mirrors.
	MaxMirrors         = 8
	DefaultMaxBodySize = "1Mi"
	// DefaultShutdownDelay is the drain delay of a server that listens
	// beyond loopback, where a load balancer or a Service may still send it
	// requests for a few seconds. On a loopback listener (a person at a
	// terminal) there is nobody to drain, and the default is none.
	DefaultShutdownDelay   = 5 * time.Second
	DefaultShutdownTimeout = 20 * time.Second

	// MaxCacheSize bounds cache.size; bigcache's HardMaxCacheSize is in MiB.
	MaxCacheSize = "8Gi"

	// DefaultSharedCacheSize is memcached's item memory (-m) when the
	// operator deploys it; MinSharedCacheSize and MaxSharedCacheSize bound it.
	DefaultSharedCacheSize = "64Mi"
	MinSharedCacheSize     = "8Mi"
	MaxSharedCacheSize     = "64Gi"
	// DefaultSharedCacheTimeout bounds each memcached call: a round trip on
	// a cluster network takes well under a millisecond, so tens of
	// milliseconds only pass when memcached is in trouble, and then the
	// upstream is asked instead.
	DefaultSharedCacheTimeout = 50 * time.Millisecond
	MaxSharedCacheTimeout     = 5 * time.Second
	// DefaultMemcachedPort is used for an address without a port.
	DefaultMemcachedPort = "11211"
	// DefaultSharedKeyNamespace prefixes keys when sharedCache.keyNamespace
	// is unset.
	DefaultSharedKeyNamespace = "medops"
)

// Defaults inside a container. The image sets them (in its env), so that
// `docker run` or `podman run` of it serves other hosts and can write its
// data; the image's layer carries ContainerDataDir owned by the nonroot
// user.
const (
	ContainerListen  = ":8080"
	ContainerDataDir = "/var/lib/medops"
)

// EnvMemoryLimit is the environment variable that tells medops-api its
// container's memory limit in bytes; the operator's Deployment fills it
// from the downward API (resourceFieldRef limits.memory), and medops-api
// sets the Go runtime's soft memory limit from it, with headroom, unless
// GOMEMLIMIT is set.
const EnvMemoryLimit = "MEDOPS_MEMORY_LIMIT"

// EnvRegion names the environment variable that tells medops-api the
// region it runs in (the operator fills it from the pod label
// topology.kubernetes.io/region); the gateway prefers mirrors there.
const EnvRegion = "MEDOPS_REGION"

// EnvReplicas is an environment variable a user may set to tell medops-api
// how many replicas share its upstream budgets. Only a replica that has
// never reached memcached needs it (the others learn the number there): with
// it, such a replica keeps to its share while memcached fails; without it,
// it sends nothing until memcached answers. The operator does not set it,
// as a scale would then roll every pod.
const EnvReplicas = "MEDOPS_REPLICAS"

// LogLevels are the accepted values of logLevel.
var LogLevels = []string{"debug", "info", "warn", "error"}

func ptr[T any](v T) *T { return &v }

// TasksEnabled reports whether the task module is on (default true).
func (m ModulesSpec) TasksEnabled() bool { return m.Tasks.Enabled == nil || *m.Tasks.Enabled }

// TasksAnonymousReads reports whether task reads need no token (default false).
func (m ModulesSpec) TasksAnonymousReads() bool {
	return m.Tasks.AnonymousReads != nil && *m.Tasks.AnonymousReads
}

// GatewayAnonymousReads reports whether gateway reads need no token (default true).
func (m ModulesSpec) GatewayAnonymousReads() bool {
	return m.Gateway.AnonymousReads == nil || *m.Gateway.AnonymousReads
}

// GatewayEnabled reports whether the gateway module is on (default false).
func (m ModulesSpec) GatewayEnabled() bool { return m.Gateway.Enabled != nil && *m.Gateway.Enabled }

// IsEnabled reports whether the /docs page is served (default true).
func (d DocsSettings) IsEnabled() bool { return d.Enabled == nil || *d.Enabled }

// IsEnabled reports whether caching is on (default true).
func (c CacheSpec) IsEnabled() bool { return c.Enabled == nil || *c.Enabled }

// PostgresDSNFile is the DSN file of the PostgreSQL task store, "" when
// tasks are kept in bbolt.
func (w *WorkloadConfig) PostgresDSNFile() string {
	if w.Postgres == nil {
		return ""
	}
	return w.Postgres.DSNFile
}

// SetDefaults fills every unset field of the cache settings.
func (c *CacheSpec) SetDefaults() {
	if c.Enabled == nil {
		c.Enabled = ptr(true)
	}
	if c.Size == nil {
		c.Size = ptr(resource.MustParse(DefaultCacheSize))
	}
	if c.TTL == nil {
		c.TTL = &metav1.Duration{Duration: DefaultCacheTTL}
	}
	if c.Shards == nil {
		c.Shards = ptr(DefaultCacheShards)
	}
	if c.MaxEntrySize == nil {
		c.MaxEntrySize = ptr(resource.MustParse(DefaultMaxEntrySize))
	}
	if c.StaleIfError == nil {
		c.StaleIfError = &metav1.Duration{Duration: DefaultStaleIfError}
	}
	if s := c.Shared; s != nil {
		if s.Size == nil {
			s.Size = ptr(resource.MustParse(DefaultSharedCacheSize))
		}
		if s.Timeout == nil {
			s.Timeout = &metav1.Duration{Duration: DefaultSharedCacheTimeout}
		}
	}
}

// SetDefaults fills every unset field of the module settings.
func (m *ModulesSpec) SetDefaults() {
	if m.Tasks.Enabled == nil {
		m.Tasks.Enabled = ptr(true)
	}
	if m.Tasks.AnonymousReads == nil {
		m.Tasks.AnonymousReads = ptr(false)
	}
	if m.Gateway.AnonymousReads == nil {
		m.Gateway.AnonymousReads = ptr(true)
	}
	if m.Gateway.Enabled == nil {
		m.Gateway.Enabled = ptr(false)
	}
	if m.Gateway.MaxRetryAfter == nil {
		m.Gateway.MaxRetryAfter = &metav1.Duration{Duration: DefaultMaxRetryAfter}
	}
	for i := range m.Gateway.Upstreams {
		u := &m.Gateway.Upstreams[i]
		if u.Timeout == nil {
			u.Timeout = &metav1.Duration{Duration: DefaultUpstreamTimeout}
		}
		if u.ResponseTimeout == nil {
			u.ResponseTimeout = &metav1.Duration{Duration: max(DefaultUpstreamResponseTimeout, u.Timeout.Duration)}
		}
		if rl := u.RateLimit; rl != nil {
			if rl.Burst == nil {
				rl.Burst = ptr(DefaultRateLimitBurst)
			}
			if rl.MaxWait == nil {
				rl.MaxWait = &metav1.Duration{Duration: DefaultRateLimitMaxWait}
			}
		}
	}
}

// ListensOnLoopback reports whether the listen address host:port binds
// loopback only (127.0.0.0/8, ::1 or localhost), so that only processes of
// this machine can connect. An empty host (all interfaces), any other name
// and an address that does not parse are not loopback: the answer decides
// whether an API without a token may start.
func ListensOnLoopback(listen string) bool {
	host, _, err := net.SplitHostPort(listen)
	if err != nil {
		return false
	}
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// SetDefaults fills every unset field, so that the file the operator renders
// spells out every value the workload will use. Set Listen first: the
// shutdown delay's default depends on it.
func (w *WorkloadConfig) SetDefaults() {
	if w.Listen == "" {
		w.Listen = DefaultListen
	}
	if w.DataDir == "" {
		w.DataDir = DefaultDataDir
	}
	if w.LogLevel == "" {
		w.LogLevel = DefaultLogLevel
	}
	w.Modules.SetDefaults()
	w.Cache.SetDefaults()
	if w.Cache.Shared != nil {
		if w.SharedCache == nil {
			w.SharedCache = &WorkloadSharedCache{}
		}
		if w.SharedCache.KeyNamespace == "" {
			w.SharedCache.KeyNamespace = DefaultSharedKeyNamespace
		}
	}
	if w.Server.MaxBodySize == nil {
		w.Server.MaxBodySize = ptr(resource.MustParse(DefaultMaxBodySize))
	}
	if w.Server.ShutdownDelay == nil {
		d := DefaultShutdownDelay
		if ListensOnLoopback(w.Listen) {
			d = 0
		}
		w.Server.ShutdownDelay = &metav1.Duration{Duration: d}
	}
	if w.Server.ShutdownTimeout == nil {
		w.Server.ShutdownTimeout = &metav1.Duration{Duration: DefaultShutdownTimeout}
	}
	if w.Server.Docs.Enabled == nil {
		w.Server.Docs.Enabled = ptr(true)
	}
}

// Validate checks a defaulted WorkloadConfig. Each error names the field by
// its path in the file (for example cache.shards), and the operator reports
// the same messages in the MedOpsAPI's status.
func (w *WorkloadConfig) Validate() field.ErrorList {
	var errs field.ErrorList
	if !validLogLevel(w.LogLevel) {
		errs = append(errs, field.NotSupported(field.NewPath("logLevel"), w.LogLevel, LogLevels))
	}
	errs = append(errs, w.Modules.Validate(field.NewPath("modules"))...)
	errs = append(errs, w.Cache.Validate(field.NewPath("cache"))...)
	if w.Cache.Shared != nil && w.Cache.Shared.Memcached != nil && (w.SharedCache == nil || w.SharedCache.HMACKeyFile == "") {
		errs = append(errs, field.Required(field.NewPath("sharedCache", "hmacKeyFile"),
			"cache.shared.memcached needs a key file to sign entries: memcached has no authentication"))
	}
	sp := field.NewPath("server")
	if msg := checkBasePath(w.Server.BasePath); msg != "" {
		errs = append(errs, field.Invalid(sp.Child("basePath"), w.Server.BasePath, msg))
	}
	if q := w.Server.MaxBodySize; q != nil && q.Sign() <= 0 {
		errs = append(errs, field.Invalid(sp.Child("maxBodySize"), q.String(), "must be positive"))
	}
	if d := w.Server.ShutdownDelay; d != nil && d.Duration < 0 {
		errs = append(errs, field.Invalid(sp.Child("shutdownDelay"), d.Duration.String(), "must not be negative"))
	}
	if d := w.Server.ShutdownTimeout; d != nil && d.Duration <= 0 {
		errs = append(errs, field.Invalid(sp.Child("shutdownTimeout"), d.Duration.String(), "must be positive"))
	}
	return errs
}

// checkBasePath returns why p is not a usable base path, or "".
func checkBasePath(p string) string {
	switch {
	case p == "":
		return ""
	case !strings.HasPrefix(p, "/"):
		return "must start with /"
	case strings.HasSuffix(p, "/"):
		return "must not end with / (leave it unset to serve at the root)"
	case strings.ContainsAny(p, "?#") || strings.Contains(p, "//"):
		return "must be a plain path: no query, fragment or empty segment"
	}
	return ""
}

func validLogLevel(l string) bool {
	for _, v := range LogLevels {
		if l == v {
			return true
		}
	}
	return false
}

// Validate checks module settings; path is where they sit in the document.
func (m *ModulesSpec) Validate(path *field.Path) field.ErrorList {
	var errs field.ErrorList
	seen := map[string]bool{}
	up := path.Child("gateway", "upstreams")
	for i, u := range m.Gateway.Upstreams {
		p := up.Index(i)
		if u.Name == "" {
			errs = append(errs, field.Required(p.Child("name"), "each upstream needs a name"))
		} else if seen[u.Name] {
			errs = append(errs, field.Duplicate(p.Child("name"), u.Name))
		}
		seen[u.Name] = true
		if err := checkUpstreamURL(u.URL); err != "" {
			errs = append(errs, field.Invalid(p.Child("url"), u.URL, err))
		}
		if u.TTL != nil && u.TTL.Duration < 0 {
			errs = append(errs, field.Invalid(p.Child("ttl"), u.TTL.Duration.String(), "must not be negative"))
		}
		if u.Timeout != nil && u.Timeout.Duration <= 0 {
			errs = append(errs, field.Invalid(p.Child("timeout"), u.Timeout.Duration.String(), "must be positive"))
		}
		errs = append(errs, u.validateMirrors(p)...)
		errs = append(errs, u.RateLimit.validate(p.Child("rateLimit"))...)
		if rt := u.ResponseTimeout; rt != nil {
			if rt.Duration <= 0 {
				errs = append(errs, field.Invalid(p.Child("responseTimeout"), rt.Duration.String(), "must be positive"))
			} else if u.Timeout != nil && rt.Duration < u.Timeout.Duration {
				errs = append(errs, field.Invalid(p.Child("responseTimeout"), rt.Duration.String(), "must not be shorter than timeout ("+u.Timeout.Duration.String()+")"))
			}
		}
	}
	if d := m.Gateway.MaxRetryAfter; d != nil && d.Duration < time.Second {
		errs = append(errs, field.Invalid(path.Child("gateway", "maxRetryAfter"), d.Duration.String(), "must be at least 1s"))
	}
	if m.GatewayEnabled() && len(m.Gateway.Upstreams) == 0 {
		errs = append(errs, field.Required(up, "the gateway needs at least one upstream"))
	}
	return errs
}

func (u *Upstream) validateMirrors(p *field.Path) field.ErrorList {
	var errs field.ErrorList
	if len(u.Mirrors) > MaxMirrors {
		errs = append(errs, field.TooMany(p.Child("mirrors"), len(u.Mirrors), MaxMirrors))
	}
	for _, msg := range validation.IsValidLabelValue(u.Region) {
		errs = append(errs, field.Invalid(p.Child("region"), u.Region, msg))
	}
	seen := map[string]bool{u.URL: true}
	for j, m := range u.Mirrors {
		mp := p.Child("mirrors").Index(j)
		if err := checkUpstreamURL(m.URL); err != "" {
			errs = append(errs, field.Invalid(mp.Child("url"), m.URL, err))
		} else if seen[m.URL] {
			errs = append(errs, field.Duplicate(mp.Child("url"), m.URL))
		}
		seen[m.URL] = true
		if m.Region != "" {
			for _, msg := range validation.IsValidLabelValue(m.Region) {
				errs = append(errs, field.Invalid(mp.Child("region"), m.Region, msg))
			}
		}
	}
	return errs
}

func (rl *RateLimit) validate(p *field.Path) field.ErrorList {
	if rl == nil {
		return nil
	}
	var errs field.ErrorList
	if rl.RequestsPerSecond < 1 || rl.RequestsPerSecond > 10000 {
		errs = append(errs, field.Invalid(p.Child("requestsPerSecond"), rl.RequestsPerSecond, "must be between 1 and 10000"))
	}
	if b := rl.Burst; b != nil && (*b < 1 || *b > 10000) {
		errs = append(errs, field.Invalid(p.Child("burst"), *b, "must be between 1 and 10000"))
	}
	if w := rl.MaxWait; w != nil && (w.Duration < 0 || w.Duration > MaxRateLimitMaxWait) {
		errs = append(errs, field.Invalid(p.Child("maxWait"), w.Duration.String(), "must be between 0 and "+MaxRateLimitMaxWait.String()))
	}
	return errs
}

func checkUpstreamURL(raw string) string {
	u, err := url.Parse(raw)
	switch {
	case err != nil:
		return "must be a URL: " + err.Error()
	case u.Scheme != "http" && u.Scheme != "https":
		return "must be an absolute http or https URL"
	case u.Host == "":
		return "must name a host"
	case u.User != nil:
		return "must not carry credentials"
	case u.RawQuery != "" || u.Fragment != "":
		return "must not have a query or fragment"
	}
	return ""
}

// Validate checks a defaulted CacheSpec; path is where it sits in the document.
func (c *CacheSpec) Validate(path *field.Path) field.ErrorList {
	var errs field.ErrorList
	maxSize := resource.MustParse(MaxCacheSize)
	if c.Size != nil {
		switch {
		case c.Size.Sign() <= 0:
			errs = append(errs, field.Invalid(path.Child("size"), c.Size.String(), "must be positive"))
		case c.Size.Cmp(maxSize) > 0:
			errs = append(errs, field.Invalid(path.Child("size"), c.Size.String(), "must be at most "+MaxCacheSize))
		case c.Size.Value() < 1<<20:
			errs = append(errs, field.Invalid(path.Child("size"), c.Size.String(), "must be at least 1Mi (bigcache counts in MiB)"))
		}
	}
	if c.TTL != nil && c.TTL.Duration <= 0 {
		errs = append(errs, field.Invalid(path.Child("ttl"), c.TTL.Duration.String(), "must be positive"))
	}
	if c.Shards != nil {
		if s := *c.Shards; s <= 0 || s&(s-1) != 0 || s > 1024 {
			errs = append(errs, field.Invalid(path.Child("shards"), s, "must be a power of two from 1 to 1024"))
		}
	}
	if c.MaxEntrySize != nil {
		if c.MaxEntrySize.Sign() <= 0 {
			errs = append(errs, field.Invalid(path.Child("maxEntrySize"), c.MaxEntrySize.String(), "must be positive"))
		} else if c.Size != nil && c.Shards != nil && *c.Shards > 0 {
			if per := c.Size.Value() / int64(*c.Shards); c.MaxEntrySize.Value() > per {
				errs = append(errs, field.Invalid(path.Child("maxEntrySize"), c.MaxEntrySize.String(),
					fmt.Sprintf("must fit in one cache shard: size/shards is %s", resource.NewQuantity(per, resource.BinarySI))))
			}
		}
	}
	for i, r := range c.Rules {
		p := path.Child("rules").Index(i)
		if !strings.HasPrefix(r.PathPrefix, "/") {
			errs = append(errs, field.Invalid(p.Child("pathPrefix"), r.PathPrefix, "must start with /"))
		}
		if r.TTL.Duration < 0 {
			errs = append(errs, field.Invalid(p.Child("ttl"), r.TTL.Duration.String(), "must not be negative"))
		}
	}
	if c.StaleIfError != nil && c.StaleIfError.Duration < 0 {
		errs = append(errs, field.Invalid(path.Child("staleIfError"), c.StaleIfError.Duration.String(), "must not be negative"))
	}
	if c.Shared != nil {
		errs = append(errs, c.Shared.Validate(path.Child("shared"))...)
	}
	return errs
}

// Validate checks a defaulted SharedCache; path is where it sits.
func (s *SharedCache) Validate(path *field.Path) field.ErrorList {
	var errs field.ErrorList
	var addrs []string
	if s.Memcached != nil {
		addrs = s.Memcached.Addresses
	}
	switch {
	case len(addrs) > 0 && s.Deploy:
		errs = append(errs, field.Invalid(path.Child("deploy"), true, "set either memcached.addresses or deploy: true, not both"))
	case len(addrs) == 0 && !s.Deploy:
		errs = append(errs, field.Required(path.Child("memcached", "addresses"), "cache.shared needs memcached.addresses or deploy: true"))
	}
	for i, a := range addrs {
		if msg := CheckMemcachedAddress(a); msg != "" {
			errs = append(errs, field.Invalid(path.Child("memcached", "addresses").Index(i), a, msg))
		}
	}
	if q := s.Size; q != nil {
		if q.Cmp(resource.MustParse(MinSharedCacheSize)) < 0 || q.Cmp(resource.MustParse(MaxSharedCacheSize)) > 0 {
			errs = append(errs, field.Invalid(path.Child("size"), q.String(), "must be between "+MinSharedCacheSize+" and "+MaxSharedCacheSize))
		}
	}
	if d := s.Timeout; d != nil && (d.Duration <= 0 || d.Duration > MaxSharedCacheTimeout) {
		errs = append(errs, field.Invalid(path.Child("timeout"), d.Duration.String(), "must be positive and at most "+MaxSharedCacheTimeout.String()))
	}
	return errs
}

// CheckMemcachedAddress returns why a is not host:port or a host name, or "".
func CheckMemcachedAddress(a string) string {
	if strings.ContainsAny(a, "/@? ") {
		return "must be host:port or a host name, without a scheme, user or path"
	}
	host, port := a, ""
	if h, p, err := net.SplitHostPort(a); err == nil {
		host, port = h, p
	} else if strings.HasPrefix(a, "[") || strings.Count(a, ":") > 0 {
		return "must be host:port, [ipv6]:port or a host name: " + err.Error()
	}
	if host == "" {
		return "must name a host"
	}
	if port != "" {
		n, err := strconv.Atoi(port)
		if err != nil || n < 1 || n > 65535 {
			return "port must be a number from 1 to 65535"
		}
	}
	if net.ParseIP(host) != nil {
		return ""
	}
	for _, label := range strings.Split(host, ".") {
		if len(label) == 0 || len(label) > 63 || strings.HasPrefix(label, "-") || strings.HasSuffix(label, "-") ||
			strings.IndexFunc(label, func(r rune) bool {
				return !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-')
			}) >= 0 {
			return "must be host:port or a host name (a Service name such as memcached.cache.svc)"
		}
	}
	return ""
}
