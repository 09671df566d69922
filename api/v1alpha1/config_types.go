package v1alpha1

import (
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// This file holds the one configuration schema of the medops-api workload.
// The operator renders a WorkloadConfig from a MedOpsAPI into a ConfigMap;
// medops-api reads the same type from its --config file. ModulesSpec and
// CacheSpec are also fields of MedOpsAPISpec, so the CRD, the rendered file
// and the workload can never drift apart: there is no second copy to keep in
// sync. Defaults live in Go (SetDefaults) because the workload also runs
// outside Kubernetes, where no apiserver applies CRD defaults.

// WorkloadConfig is the medops-api configuration file.
// +kubebuilder:object:generate=true
type WorkloadConfig struct {
	// Listen is the address the HTTP server binds, host:port.
	// +optional
	Listen string `json:"listen,omitempty"`

	// DataDir is the folder that holds the embedded (bbolt) task store. It
	// is not used when Postgres.DSNFile is set.
	// +optional
	DataDir string `json:"dataDir,omitempty"`

	// Postgres keeps tasks in PostgreSQL instead of the embedded bbolt file,
	// so that several replicas share one set of tasks. Unset (a pointer, so
	// that the rendered file and its hash do not change): bbolt.
	// +optional
	Postgres *WorkloadPostgres `json:"postgres,omitempty"`

	// LogLevel is one of debug, info, warn, error.
	// +optional
	LogLevel string `json:"logLevel,omitempty"`

	// Modules switches the API's modules on and off.
	// +optional
	Modules ModulesSpec `json:"modules,omitempty"`

	// Cache configures the in-process response cache.
	// +optional
	Cache CacheSpec `json:"cache,omitempty"`

	// Auth configures bearer-token protection of the API.
	// +optional
	Auth WorkloadAuth `json:"auth,omitempty"`

	// Server holds HTTP server limits and shutdown behaviour.
	// +optional
	Server ServerSettings `json:"server,omitempty"`

	// SharedCache holds what the workload needs besides cache.shared to use
	// the shared tier: where its keys live and the key that signs entries.
	// A pointer, so that a config without the tier renders (and hashes) as
	// before.
	// +optional
	SharedCache *WorkloadSharedCache `json:"sharedCache,omitempty"`
}

// WorkloadSharedCache tells medops-api how to use cache.shared safely.
// The operator fills it; it is not part of the MedOpsAPI resource.
type WorkloadSharedCache struct {
	// KeyNamespace prefixes every memcached key, so that several APIs can
	// share one memcached without reading each other's entries or budgets.
	// The operator sets it to the MedOpsAPI's namespace/name. Defaults to
	// "medops".
	// +optional
	KeyNamespace string `json:"keyNamespace,omitempty"`

	// HMACKeyFile is a file holding the key that signs and checks every
	// stored entry (HMAC-SHA256), mounted from a Secret the operator
	// creates, never from the ConfigMap. Required when cache.shared is set:
	// memcached has no authentication, and an entry that fails the check is
	// ignored.
	// +optional
	HMACKeyFile string `json:"hmacKeyFile,omitempty"`
}

// WorkloadPostgres tells medops-api where its PostgreSQL connection string is.
type WorkloadPostgres struct {
	// DSNFile is a file holding the connection string (a postgres:// URL or
	// libpq key=value pairs), mounted from a Secret, never from the ConfigMap.
	// Setting it selects the PostgreSQL task store. The file is read again
	// for every new database connection, so a rotated password is picked up
	// without a restart.
	// +optional
	DSNFile string `json:"dsnFile,omitempty"`
}

// WorkloadAuth tells medops-api where its bearer token is.
type WorkloadAuth struct {
	// TokenFile is a file holding the bearer token that writes, and reads of
	// modules without anonymousReads, must present. Health, readiness,
	// /metrics and the OpenAPI document need no token. The operator mounts it from a Secret, never from the ConfigMap.
	// medops-api reads it again within a second of a change (the kubelet
	// swaps a mounted Secret in place), so rotating the token needs no
	// restart; an unreadable or empty update keeps the last good token.
	// Without it (and without disabled), medops-api only starts on a
	// loopback listen address, and warns that the API is open there.
	// +optional
	TokenFile string `json:"tokenFile,omitempty"`

	// Disabled opens every endpoint, reads and writes, without a token, on
	// any listen address: the one explicit opt-in to anonymous access
	// (medops-api's --auth-disabled). Without a tokenFile and without it,
	// medops-api refuses to listen beyond loopback.
	// +optional
	Disabled bool `json:"disabled,omitempty"`
}

// ServerSettings are HTTP server limits.
type ServerSettings struct {
	// BasePath is the path prefix the API is served under, e.g. /medops:
	// then /medops/api/v1/... and /medops/openapi.json. /healthz, /readyz
	// and /metrics stay at the root, where probes and scrapers call the pod
	// directly. Unset serves the API at the root. The operator sets it from
	// ingress.path, since the Ingress forwards the path unchanged.
	// +optional
	BasePath string `json:"basePath,omitempty"`

	// MaxBodySize is the largest request body accepted; larger ones get 413.
	// +optional
	MaxBodySize *resource.Quantity `json:"maxBodySize,omitempty"`

	// ShutdownDelay is how long /readyz reports not-ready before the server
	// stops accepting connections, so load balancers can take the pod out.
	// Defaults to 5s, or to none when listen is a loopback address (nobody
	// routes to it). A second SIGTERM or SIGINT cuts it short and stops at
	// once.
	// +optional
	ShutdownDelay *metav1.Duration `json:"shutdownDelay,omitempty"`

	// ShutdownTimeout bounds how long in-flight requests may take to finish.
	// +optional
	ShutdownTimeout *metav1.Duration `json:"shutdownTimeout,omitempty"`

	// Docs configures the interactive API documentation page at /docs.
	// +optional
	Docs DocsSettings `json:"docs,omitempty"`
}

// DocsSettings switches the /docs page (Swagger UI rendered from
// /openapi.json) on and off.
type DocsSettings struct {
	// Enabled serves /docs. Defaults to true; /openapi.json is served either way.
	// +optional
	Enabled *bool `json:"enabled,omitempty"`
}

// ModulesSpec switches the API's modules (chi sub-routers) on and off.
type ModulesSpec struct {
	// Tasks is the durable task server under /api/v1/tasks.
	// +optional
	Tasks TasksModule `json:"tasks,omitempty"`

	// Gateway is the caching gateway to upstream REST services under
	// /api/v1/gateway/{upstream}/.
	// +optional
	Gateway GatewayModule `json:"gateway,omitempty"`
}

// TasksModule configures the task server.
type TasksModule struct {
	// Enabled mounts the task server. Defaults to true.
	// +optional
	Enabled *bool `json:"enabled,omitempty"`

	// AnonymousReads lets GET and HEAD on /api/v1/tasks through without the
	// bearer token. Defaults to false: a medical operations team's task
	// list is not public data. Writes always need the token.
	// +optional
	AnonymousReads *bool `json:"anonymousReads,omitempty"`

	// RequireIfMatch refuses a PATCH or DELETE without an If-Match header
	// (428), so no client overwrites or deletes a change it has not seen.
	// Off by default: If-Match is then optional.
	// +optional
	RequireIfMatch bool `json:"requireIfMatch,omitempty"`
}

// GatewayModule configures the upstream gateway.
// +kubebuilder:validation:XValidation:rule="!has(self.upstreams) || self.upstreams.all(u, self.upstreams.exists_one(v, v.name == u.name))",message="upstream names must be unique"
// +kubebuilder:validation:XValidation:rule="!has(self.enabled) || !self.enabled || (has(self.upstreams) && size(self.upstreams) > 0)",message="the gateway needs at least one upstream when enabled"
type GatewayModule struct {
	// Enabled mounts the gateway. Defaults to false.
	// +optional
	Enabled *bool `json:"enabled,omitempty"`

	// Upstreams are the REST services the gateway may call, by name.
	// +optional
	// +kubebuilder:validation:MaxItems=32
	// +listType=atomic
	Upstreams []Upstream `json:"upstreams,omitempty"`

	// AnonymousReads lets GET and HEAD on /api/v1/gateway through without
	// the bearer token. Defaults to true: the gateway relays public upstream
	// data. The token is never forwarded upstream.
	// +optional
	AnonymousReads *bool `json:"anonymousReads,omitempty"`

	// MaxRetryAfter caps how long an upstream's Retry-After (or
	// X-RateLimit-Reset) can shut it off, and the Retry-After relayed to
	// clients, so a wrong or hostile header cannot block an upstream for
	// hours. Defaults to 5m.
	// +optional
	// +kubebuilder:validation:Type=string
	// +kubebuilder:validation:Pattern=`^(0|([0-9]+(\.[0-9]+)?(ns|us|ms|s|m|h))+)$`
	// +kubebuilder:validation:XValidation:rule="duration(self) >= duration('1s')",message="modules.gateway.maxRetryAfter must be at least 1s"
	MaxRetryAfter *metav1.Duration `json:"maxRetryAfter,omitempty"`
}

// Upstream is one REST service behind the gateway.
// +kubebuilder:validation:XValidation:rule="!has(self.timeout) || !has(self.responseTimeout) || duration(self.responseTimeout) >= duration(self.timeout)",message="upstream responseTimeout must not be shorter than timeout"
// +kubebuilder:validation:XValidation:rule="!has(self.mirrors) || self.mirrors.all(m, m.url != self.url && self.mirrors.exists_one(n, n.url == m.url))",message="each mirror url must differ from the upstream's url and from the other mirrors"
type Upstream struct {
	// Name is the path segment that selects this upstream:
	// /api/v1/gateway/{name}/...
	// +kubebuilder:validation:Pattern=`^[a-z0-9]([-a-z0-9]*[a-z0-9])?$`
	// +kubebuilder:validation:MaxLength=63
	Name string `json:"name"`

	// URL is the absolute http(s) base URL requests are forwarded under.
	// +kubebuilder:validation:MaxLength=2048
	// +kubebuilder:validation:XValidation:rule="isURL(self) && (url(self).getScheme() == 'http' || url(self).getScheme() == 'https') && url(self).getHostname() != ''",message="url must be an absolute http or https URL"
	URL string `json:"url"`

	// Region is where url runs, as in the node label
	// topology.kubernetes.io/region; see mirrors.
	// +optional
	// +kubebuilder:validation:MaxLength=63
	// +kubebuilder:validation:Pattern=`^([A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?)?$`
	Region string `json:"region,omitempty"`

	// TTL is how long this upstream's responses stay fresh in the cache when
	// the upstream does not say (Cache-Control max-age). Defaults to the cache TTL.
	// +optional
	// +kubebuilder:validation:Type=string
	// +kubebuilder:validation:Pattern=`^(0|([0-9]+(\.[0-9]+)?(ns|us|ms|s|m|h))+)$`
	TTL *metav1.Duration `json:"ttl,omitempty"`

	// Timeout bounds waiting for the upstream: for its response headers,
	// then for each pause in its body. It does not bound a slow client's
	// download of the answer. Defaults to 10s.
	// +optional
	// +kubebuilder:validation:Type=string
	// +kubebuilder:validation:Pattern=`^(0|([0-9]+(\.[0-9]+)?(ns|us|ms|s|m|h))+)$`
	// +kubebuilder:validation:XValidation:rule="duration(self) > duration('0s')",message="upstream timeout must be positive"
	Timeout *metav1.Duration `json:"timeout,omitempty"`

	// ResponseTimeout bounds the whole exchange with the upstream: the time
	// spent waiting for its response headers and for all of its body, added
	// up, so an upstream that trickles its answer in pauses shorter than
	// timeout cannot hold a request. Like timeout, it does not count the time
	// a slow client takes to download the answer. When it runs out before
	// anything was sent, the client gets a JSON 504. It must not be shorter
	// than timeout. Defaults to 30s, or to timeout when that is longer.
	// +optional
	// +kubebuilder:validation:Type=string
	// +kubebuilder:validation:Pattern=`^(0|([0-9]+(\.[0-9]+)?(ns|us|ms|s|m|h))+)$`
	// +kubebuilder:validation:XValidation:rule="duration(self) > duration('0s')",message="upstream responseTimeout must be positive"
	ResponseTimeout *metav1.Duration `json:"responseTimeout,omitempty"`

	// Mirrors are other base URLs serving the same API, tried when url (or
	// another mirror) fails. The gateway prefers the mirrors in its own
	// region (MEDOPS_REGION), then the fastest; a mirror that refuses
	// connections, times out or answers 5xx is left out for a back-off.
	// +optional
	// +kubebuilder:validation:MaxItems=8
	// +listType=atomic
	Mirrors []Mirror `json:"mirrors,omitempty"`

	// RateLimit makes the gateway self-throttle its calls to this upstream
	// (url and mirrors together). Without a shared cache tier each replica
	// keeps its own budget.
	// +optional
	RateLimit *RateLimit `json:"rateLimit,omitempty"`
}

// Mirror is another base URL of an upstream.
type Mirror struct {
	// URL is the mirror's absolute http(s) base URL; it serves the same API
	// under its path as the upstream's url does under its own.
	// +kubebuilder:validation:MaxLength=2048
	// +kubebuilder:validation:XValidation:rule="isURL(self) && (url(self).getScheme() == 'http' || url(self).getScheme() == 'https') && url(self).getHostname() != ''",message="mirror url must be an absolute http or https URL"
	URL string `json:"url"`

	// Region is where the mirror runs, as in the node label
	// topology.kubernetes.io/region. Replicas in that region prefer it.
	// +optional
	// +kubebuilder:validation:MaxLength=63
	// +kubebuilder:validation:Pattern=`^([A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?)?$`
	Region string `json:"region,omitempty"`
}

// RateLimit is an upstream's call budget: requestsPerSecond on average, with
// up to burst calls at once, so no one-second window holds more than
// requestsPerSecond + burst calls.
type RateLimit struct {
	// RequestsPerSecond is the steady rate of calls (Ensembl asks for 15).
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=10000
	RequestsPerSecond int32 `json:"requestsPerSecond"`

	// Burst is how many calls may go at once after a quiet time. Defaults
	// to 1: calls are spaced evenly.
	// +optional
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=10000
	Burst *int32 `json:"burst,omitempty"`

	// MaxWait is how long a call over budget waits for its slot. After it
	// the client gets the cached answer if there is one, even stale, else a
	// JSON 429 with Retry-After. Defaults to 2s; 0 never waits.
	// +optional
	// +kubebuilder:validation:Type=string
	// +kubebuilder:validation:Pattern=`^(0|([0-9]+(\.[0-9]+)?(ns|us|ms|s|m|h))+)$`
	// +kubebuilder:validation:XValidation:rule="duration(self) <= duration('1m')",message="rateLimit.maxWait must be at most 1m"
	MaxWait *metav1.Duration `json:"maxWait,omitempty"`
}

// CacheSpec configures the in-process bigcache response cache.
// +kubebuilder:validation:XValidation:rule="!has(self.shards) || self.shards in [1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024]",message="cache.shards must be a power of two (1, 2, 4 ... 1024)"
// +kubebuilder:validation:XValidation:rule="!has(self.size) || !isQuantity(string(self.size)) || (quantity(string(self.size)).compareTo(quantity('1Mi')) >= 0 && quantity(string(self.size)).compareTo(quantity('8Gi')) <= 0)",message="cache.size must be between 1Mi and 8Gi"
// +kubebuilder:validation:XValidation:rule="!has(self.maxEntrySize) || !isQuantity(string(self.maxEntrySize)) || quantity(string(self.maxEntrySize)).isGreaterThan(quantity('0'))",message="cache.maxEntrySize must be positive"
// +kubebuilder:validation:XValidation:rule="(has(self.size) && !isQuantity(string(self.size))) || (has(self.maxEntrySize) && !isQuantity(string(self.maxEntrySize))) || (has(self.shards) && self.shards <= 0) || (has(self.maxEntrySize) ? quantity(string(self.maxEntrySize)).asApproximateFloat() : 1048576.0) <= (has(self.size) ? quantity(string(self.size)).asApproximateFloat() : 67108864.0) / double(has(self.shards) ? self.shards : 16)",message="cache.maxEntrySize must fit in one cache shard: it may be at most cache.size / cache.shards (defaults: 64Mi / 16)"
type CacheSpec struct {
	// Enabled turns response caching on. Defaults to true.
	// +optional
	Enabled *bool `json:"enabled,omitempty"`

	// Size is the cache's hard memory limit (bigcache HardMaxCacheSize).
	// Gateway hits keep copies of recently hit entries beside it, at most
	// a sixteenth of it. Defaults to 64Mi, which suits a Raspberry Pi.
	// +optional
	Size *resource.Quantity `json:"size,omitempty"`

	// TTL is how long a response stays fresh unless a rule or the response
	// says otherwise. Defaults to 5m.
	// +optional
	// +kubebuilder:validation:Type=string
	// +kubebuilder:validation:Pattern=`^(0|([0-9]+(\.[0-9]+)?(ns|us|ms|s|m|h))+)$`
	// +kubebuilder:validation:XValidation:rule="duration(self) > duration('0s')",message="cache.ttl must be positive"
	TTL *metav1.Duration `json:"ttl,omitempty"`

	// Shards is the number of bigcache shards, a power of two. Defaults to 16.
	// +optional
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=1024
	Shards *int32 `json:"shards,omitempty"`

	// MaxEntrySize is the largest response body cached; one entry must fit
	// in one shard (size / shards). Defaults to 1Mi.
	// +optional
	MaxEntrySize *resource.Quantity `json:"maxEntrySize,omitempty"`

	// Rules set TTLs by path prefix; the longest matching prefix wins.
	// +optional
	// +kubebuilder:validation:MaxItems=64
	// +listType=atomic
	Rules []CacheRule `json:"rules,omitempty"`

	// StaleIfError is how long past expiry an entry may still be served when
	// the upstream fails. Zero turns it off. Defaults to 10m.
	// +optional
	// +kubebuilder:validation:Type=string
	// +kubebuilder:validation:Pattern=`^(0|([0-9]+(\.[0-9]+)?(ns|us|ms|s|m|h))+)$`
	StaleIfError *metav1.Duration `json:"staleIfError,omitempty"`

	// CacheAuthorized caches responses to requests that carry credentials
	// (Authorization or Cookie). Off by default.
	// +optional
	CacheAuthorized bool `json:"cacheAuthorized,omitempty"`

	// Shared adds a second cache level that all replicas share: memcached.
	// Gateway answers missing from a replica's own cache are looked up
	// there before the upstream is called, and the upstreams' rateLimit
	// budgets become cluster-wide. Unset: each replica caches and budgets
	// on its own.
	// +optional
	Shared *SharedCache `json:"shared,omitempty"`
}

// SharedCache is the memcached tier shared by every replica. Memcached has
// no authentication: keys are hashed and namespaced per MedOpsAPI, and each
// stored answer carries an HMAC made with a key from the workload's
// sharedCache.hmacKeyFile, so an entry written by anyone else is refused.
// +kubebuilder:validation:XValidation:rule="(has(self.memcached) && has(self.memcached.addresses) && size(self.memcached.addresses) > 0) != (has(self.deploy) && self.deploy)",message="cache.shared needs exactly one of memcached.addresses or deploy: true"
// +kubebuilder:validation:XValidation:rule="!has(self.size) || !isQuantity(string(self.size)) || (quantity(string(self.size)).compareTo(quantity('8Mi')) >= 0 && quantity(string(self.size)).compareTo(quantity('64Gi')) <= 0)",message="cache.shared.size must be between 8Mi and 64Gi"
type SharedCache struct {
	// Memcached names memcached servers that already run.
	// +optional
	Memcached *MemcachedTier `json:"memcached,omitempty"`

	// Deploy makes the operator run a memcached Deployment and Service for
	// this MedOpsAPI, reachable only from its pods. The workload itself
	// never reads it.
	// +optional
	Deploy bool `json:"deploy,omitempty"`

	// Size is the memory memcached may use for items (its -m) when the
	// operator deploys it. Defaults to 64Mi.
	// +optional
	Size *resource.Quantity `json:"size,omitempty"`

	// Timeout bounds each memcached call. Memcached is never on the
	// critical path: a call that takes longer counts as a miss and the
	// request goes on to the upstream. Defaults to 50ms.
	// +optional
	// +kubebuilder:validation:Type=string
	// +kubebuilder:validation:Pattern=`^(0|([0-9]+(\.[0-9]+)?(ns|us|ms|s|m|h))+)$`
	// +kubebuilder:validation:XValidation:rule="duration(self) > duration('0s') && duration(self) <= duration('5s')",message="cache.shared.timeout must be positive and at most 5s"
	Timeout *metav1.Duration `json:"timeout,omitempty"`
}

// MemcachedTier lists memcached servers.
type MemcachedTier struct {
	// Addresses are host:port pairs, or host names (a Service name, port
	// 11211 unless given) that the workload resolves to all their addresses,
	// again every 30 seconds. A headless Service thus spreads keys over all
	// its pods.
	// +kubebuilder:validation:MinItems=1
	// +kubebuilder:validation:MaxItems=16
	// +listType=atomic
	// +kubebuilder:validation:items:MaxLength=260
	// +kubebuilder:validation:items:Pattern=`^[A-Za-z0-9]([-A-Za-z0-9.]*[A-Za-z0-9])?(:[0-9]{1,5})?$|^\[[0-9A-Fa-f:.]+\](:[0-9]{1,5})?$`
	Addresses []string `json:"addresses,omitempty"`
}

// CacheRule sets a TTL for paths under a prefix.
type CacheRule struct {
	// PathPrefix is matched against the request path, e.g. /api/v1/gateway/ensembl/.
	// +kubebuilder:validation:Pattern=`^/`
	// +kubebuilder:validation:MaxLength=512
	PathPrefix string `json:"pathPrefix"`

	// TTL for matching responses; zero means do not cache.
	// +kubebuilder:validation:Type=string
	// +kubebuilder:validation:Pattern=`^(0|([0-9]+(\.[0-9]+)?(ns|us|ms|s|m|h))+)$`
	TTL metav1.Duration `json:"ttl"`
}
