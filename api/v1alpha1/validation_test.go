package v1alpha1_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/yaml"

	"github.com/medops/medops/api/v1alpha1"
	"github.com/medops/medops/internal/repo"
)

// newObject builds a MedOpsAPI from a YAML spec. Unstructured on purpose:
// some cases need shapes the Go types cannot produce (a quantity written as
// a bare integer, which the int-or-string schema allows).
func newObject(t *testing.T, ns, name, specYAML string) *unstructured.Unstructured {
	t.Helper()
	spec := map[string]any{}
	if err := yaml.Unmarshal([]byte(specYAML), &spec); err != nil {
		t.Fatalf("bad spec in test: %v", err)
	}
	u := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": v1alpha1.GroupVersion.String(),
		"kind":       "MedOpsAPI",
		"metadata":   map[string]any{"name": name, "namespace": ns},
		"spec":       spec,
	}}
	return u
}

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// TestInvalidMedOpsAPIsAreRefused sends each invalid spec to the real
// apiserver and expects a 422 Invalid whose message tells the user what to fix.
func TestInvalidMedOpsAPIsAreRefused(t *testing.T) {
	cases := []struct {
		name, spec, want string
	}{
		{"replicas above autoscaling maximum", `
replicas: 5
autoscaling: {minReplicas: 1, maxReplicas: 3}`, "replicas must not exceed autoscaling.maxReplicas"},
		{"autoscaling min above max", `
autoscaling: {minReplicas: 5, maxReplicas: 2}`, "autoscaling.minReplicas must not be greater than autoscaling.maxReplicas"},
		{"autoscaling without maxReplicas", `
autoscaling: {minReplicas: 2}`, "spec.autoscaling.maxReplicas: Required value"},
		{"tls without host", `
ingress: {enabled: true, tls: {secretName: api-tls}}`, "ingress.tls needs ingress.host"},
		{"shards not a power of two", `
cache: {shards: 12}`, "cache.shards must be a power of two"},
		{"entry larger than a shard", `
cache: {size: 16Mi, shards: 16, maxEntrySize: 2Mi}`, "cache.maxEntrySize must fit in one cache shard"},
		{"entry larger than a shard, size as integer", `
cache: {size: 16777216, shards: 16, maxEntrySize: 2Mi}`, "cache.maxEntrySize must fit in one cache shard"},
		{"default entry size larger than a shard of a small cache", `
cache: {size: 8Mi}`, "cache.maxEntrySize must fit in one cache shard"},
		{"entry size zero", `
cache: {maxEntrySize: "0"}`, "cache.maxEntrySize must be positive"},
		{"cache too large", `
cache: {size: 16Gi}`, "cache.size must be between 1Mi and 8Gi"},
		{"cache size zero", `
cache: {size: "0"}`, "cache.size must be between 1Mi and 8Gi"},
		{"cache size not a quantity", `
cache: {size: lots}`, "spec.cache.size"},
		{"upstream with ftp URL", `
modules: {gateway: {enabled: true, upstreams: [{name: ensembl, url: "ftp://ftp.ensembl.org/pub"}]}}`, "url must be an absolute http or https URL"},
		{"upstream with relative URL", `
modules: {gateway: {enabled: true, upstreams: [{name: ensembl, url: "/rest"}]}}`, "url must be an absolute http or https URL"},
		{"duplicate upstream names", `
modules: {gateway: {enabled: true, upstreams: [{name: a, url: "https://a.example"}, {name: a, url: "https://b.example"}]}}`, "upstream names must be unique"},
		{"gateway without upstreams", `
modules: {gateway: {enabled: true}}`, "the gateway needs at least one upstream"},
		// The default task store is one replica's claim: a second replica
		// would answer from tasks of its own.
		{"two replicas with the default storage", `
replicas: 2`, "more than 1 replica with the tasks module needs a task store the replicas share: set storage.postgres"},
		{"persistent storage with two replicas", `
replicas: 2
storage: {size: 1Gi}`, "more than 1 replica with the tasks module needs a task store the replicas share: set storage.postgres"},
		{"tasks module switched on explicitly with three replicas", `
replicas: 3
modules: {tasks: {enabled: true}}`, "set storage.postgres (or storage.ephemeral: true"},
		{"autoscaling with the default storage", `
autoscaling: {minReplicas: 1, maxReplicas: 3}`, "autoscaling with the tasks module needs a task store the replicas share: set storage.postgres"},
		{"persistent storage with autoscaling", `
autoscaling: {minReplicas: 1, maxReplicas: 3}
storage: {storageClassName: local-path}`, "autoscaling with the tasks module needs a task store the replicas share: set storage.postgres"},
		{"postgres with a claim size", `
storage: {size: 2Gi, postgres: {secretRef: {name: medops-db-app}}}`, "storage.postgres keeps the tasks in PostgreSQL, not on a volume: remove storage.size"},
		{"postgres with a storage class", `
storage: {storageClassName: local-path, postgres: {secretRef: {name: medops-db-app}}}`, "storage.postgres keeps the tasks in PostgreSQL, not on a volume"},
		{"postgres with ephemeral", `
storage: {ephemeral: true, postgres: {secretRef: {name: medops-db-app}}}`, "storage.postgres keeps the tasks in PostgreSQL, not on a volume"},
		{"postgres with retainOnDelete", `
storage: {retainOnDelete: false, postgres: {secretRef: {name: medops-db-app}}}`, "storage.postgres keeps the tasks in PostgreSQL, not on a volume"},
		{"postgres without a Secret name", `
storage: {postgres: {secretRef: {key: uri}}}`, "spec.storage.postgres.secretRef.name: Required value"},
		{"postgres without a secretRef", `
storage: {postgres: {}}`, "spec.storage.postgres.secretRef: Required value"},
		{"postgres Secret key with a slash", `
storage: {postgres: {secretRef: {name: medops-db-app, key: ../uri}}}`, "spec.storage.postgres.secretRef.key in body should match"},
		{"storage size zero", `
storage: {size: "0"}`, "storage.size must be positive and at most 1Ti"},
		{"pdb with both fields", `
podDisruptionBudget: {minAvailable: 1, maxUnavailable: 1}`, "podDisruptionBudget needs exactly one of minAvailable or maxUnavailable"},
		{"pdb with neither field", `
podDisruptionBudget: {}`, "podDisruptionBudget needs exactly one of minAvailable or maxUnavailable"},
		{"unknown architecture", `
architectures: [x86]`, `spec.architectures[0]: Unsupported value: "x86"`},
		{"ingress path without slash", `
ingress: {enabled: true, path: api}`, "ingress.path must start with /"},
		{"ingress proxy read timeout zero", `
ingress: {enabled: true, proxyReadTimeout: 0s}`, "ingress.proxyReadTimeout must be between 1s and 1h"},
		{"ingress body size too large", `
ingress: {enabled: true, proxyBodySize: 2Gi}`, "ingress.proxyBodySize must be positive and at most 1Gi"},
		{"limitRPS zero", `
ingress: {enabled: true, limitRPS: 0}`, "spec.ingress.limitRPS: Invalid value: 0: spec.ingress.limitRPS in body should be greater than or equal to 1"},
		{"unknown log level", `
logLevel: verbose`, `spec.logLevel: Unsupported value: "verbose"`},
		{"service type ExternalName", `
service: {type: ExternalName}`, `spec.service.type: Unsupported value: "ExternalName"`},
		{"token secret and auth disabled", `
auth: {disabled: true, tokenSecretRef: {name: my-token}}`, "auth.tokenSecretRef and auth.disabled: true contradict each other"},
		{"shared cache with neither addresses nor deploy", `
cache: {shared: {size: 64Mi}}`, "cache.shared needs exactly one of memcached.addresses or deploy: true"},
		{"shared cache with both addresses and deploy", `
cache: {shared: {deploy: true, memcached: {addresses: ["mc:11211"]}}}`, "cache.shared needs exactly one of memcached.addresses or deploy: true"},
		{"shared cache address with a scheme", `
cache: {shared: {memcached: {addresses: ["tcp://mc:11211"]}}}`, "spec.cache.shared.memcached.addresses[0] in body should match"},
		{"shared cache too small", `
cache: {shared: {deploy: true, size: 1Mi}}`, "cache.shared.size must be between 8Mi and 64Gi"},
		{"shared cache timeout too long", `
cache: {shared: {deploy: true, timeout: 10s}}`, "cache.shared.timeout must be positive and at most 5s"},
		{"cache ttl not a duration", `
cache: {ttl: 5 minutes}`, "spec.cache.ttl in body should match"},
		{"cache ttl zero", `
cache: {ttl: 0s}`, "cache.ttl must be positive"},
		{"negative rule ttl", `
cache: {rules: [{pathPrefix: /x, ttl: -1m}]}`, "spec.cache.rules[0].ttl in body should match"},
		{"upstream timeout zero", `
modules: {gateway: {enabled: true, upstreams: [{name: a, url: "https://a.example", timeout: 0s}]}}`, "upstream timeout must be positive"},
		{"upstream response timeout zero", `
modules: {gateway: {enabled: true, upstreams: [{name: a, url: "https://a.example", responseTimeout: 0s}]}}`, "upstream responseTimeout must be positive"},
		{"upstream response timeout shorter than timeout", `
modules: {gateway: {enabled: true, upstreams: [{name: a, url: "https://a.example", timeout: 20s, responseTimeout: 10s}]}}`, "upstream responseTimeout must not be shorter than timeout"},
		{"mirror with ftp URL", `
modules: {gateway: {enabled: true, upstreams: [{name: a, url: "https://a.example", mirrors: [{url: "ftp://b.example"}]}]}}`, "mirror url must be an absolute http or https URL"},
		{"mirror same as the upstream url", `
modules: {gateway: {enabled: true, upstreams: [{name: a, url: "https://a.example", mirrors: [{url: "https://a.example"}]}]}}`, "each mirror url must differ from the upstream's url and from the other mirrors"},
		{"two identical mirrors", `
modules: {gateway: {enabled: true, upstreams: [{name: a, url: "https://a.example", mirrors: [{url: "https://b.example"}, {url: "https://b.example"}]}]}}`, "each mirror url must differ from the upstream's url and from the other mirrors"},
		{"mirror region not a label value", `
modules: {gateway: {enabled: true, upstreams: [{name: a, url: "https://a.example", mirrors: [{url: "https://b.example", region: "eu west"}]}]}}`, "spec.modules.gateway.upstreams[0].mirrors[0].region in body should match"},
		{"nine mirrors", `
modules: {gateway: {enabled: true, upstreams: [{name: a, url: "https://a.example", mirrors: [{url: "https://m1.example"}, {url: "https://m2.example"}, {url: "https://m3.example"}, {url: "https://m4.example"}, {url: "https://m5.example"}, {url: "https://m6.example"}, {url: "https://m7.example"}, {url: "https://m8.example"}, {url: "https://m9.example"}]}]}}`, "must have at most 8 items"},
		{"rate limit without requestsPerSecond", `
modules: {gateway: {enabled: true, upstreams: [{name: a, url: "https://a.example", rateLimit: {burst: 5}}]}}`, "spec.modules.gateway.upstreams[0].rateLimit.requestsPerSecond: Required value"},
		{"rate limit zero", `
modules: {gateway: {enabled: true, upstreams: [{name: a, url: "https://a.example", rateLimit: {requestsPerSecond: 0}}]}}`, "requestsPerSecond in body should be greater than or equal to 1"},
		{"rate limit burst zero", `
modules: {gateway: {enabled: true, upstreams: [{name: a, url: "https://a.example", rateLimit: {requestsPerSecond: 15, burst: 0}}]}}`, "burst in body should be greater than or equal to 1"},
		{"rate limit max wait too long", `
modules: {gateway: {enabled: true, upstreams: [{name: a, url: "https://a.example", rateLimit: {requestsPerSecond: 15, maxWait: 2m}}]}}`, "rateLimit.maxWait must be at most 1m"},
		{"rate limit negative max wait", `
modules: {gateway: {enabled: true, upstreams: [{name: a, url: "https://a.example", rateLimit: {requestsPerSecond: 15, maxWait: -1s}}]}}`, "rateLimit.maxWait in body should match"},
		{"negative replicas", `
replicas: -1`, "spec.replicas in body should be greater than or equal to 0"},
		{"route without parentRefs", `
route: {enabled: true, hostnames: [api.example.org]}`, "route.parentRefs needs at least one Gateway when route.enabled is true"},
		{"route with empty parentRefs", `
route: {enabled: true, parentRefs: []}`, "route.parentRefs needs at least one Gateway when route.enabled is true"},
		{"route parentRef without name", `
route: {enabled: true, parentRefs: [{namespace: gateways}]}`, "spec.route.parentRefs[0].name: Required value"},
		{"route hostname with scheme", `
route: {enabled: true, parentRefs: [{name: gw}], hostnames: ["https://api.example.org"]}`, "route.hostnames must be lower-case DNS names"},
		{"route hostname with port", `
route: {enabled: true, parentRefs: [{name: gw}], hostnames: ["api.example.org:443"]}`, "route.hostnames must be lower-case DNS names"},
		{"route hostname upper case", `
route: {enabled: true, parentRefs: [{name: gw}], hostnames: [API.example.org]}`, "route.hostnames must be lower-case DNS names"},
		{"route wildcard not leading", `
route: {enabled: true, parentRefs: [{name: gw}], hostnames: ["api.*.example.org"]}`, "route.hostnames must be lower-case DNS names"},
		{"route path without slash", `
route: {enabled: true, parentRefs: [{name: gw}], path: api}`, "route.path must start with /"},
		{"route request timeout not a Gateway API duration", `
route: {enabled: true, parentRefs: [{name: gw}], timeouts: {request: 1.5s}}`, "route.timeouts.request must be a Gateway API duration such as 30s or 1m30s"},
		{"route backend timeout in days", `
route: {enabled: true, parentRefs: [{name: gw}], timeouts: {backendRequest: 1d}}`, "route.timeouts.backendRequest must be a Gateway API duration"},
		{"route backend timeout longer than request timeout", `
route: {enabled: true, parentRefs: [{name: gw}], timeouts: {request: 10s, backendRequest: 1m}}`, "route.timeouts.backendRequest must not be longer than route.timeouts.request"},
		{"service monitor interval not a duration", `
monitoring: {serviceMonitor: {enabled: true, interval: 30 seconds}}`, "monitoring.serviceMonitor.interval must be a Prometheus duration"},
		{"prometheus namespace not a name", `
monitoring: {prometheusNamespace: Monitoring}`, "spec.monitoring.prometheusNamespace in body should match"},
	}
	expectRefused(t, "invalid", cases)
}

// expectRefused creates each case's MedOpsAPI in a new namespace and
// expects a 422 Invalid whose message contains want.
func expectRefused(t *testing.T, prefix string, cases []struct{ name, spec, want string }) {
	t.Helper()
	ns := createNamespace(t, prefix)
	for i, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			obj := newObject(t, ns, fmt.Sprintf("bad-%d", i), tc.spec)
			err := k8s.Create(ctxT(t), obj)
			if err == nil {
				t.Fatalf("apiserver accepted an invalid MedOpsAPI:\n%s", tc.spec)
			}
			if !apierrors.IsInvalid(err) {
				t.Fatalf("want an Invalid error, got %v", err)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error does not say %q:\n%v", tc.want, err)
			}
		})
	}
}

// TestValidMedOpsAPIsAreAccepted covers the edges of the rules from the valid
// side, so a rule that refuses too much fails here.
func TestValidMedOpsAPIsAreAccepted(t *testing.T) {
	cases := []struct{ name, spec string }{
		{"empty spec", `{}`},
		{"autoscaling without replicas", `
autoscaling: {minReplicas: 2, maxReplicas: 5}
storage: {postgres: {secretRef: {name: medops-db-app}}}`},
		{"autoscaling with the defaulted replicas below minReplicas", `
replicas: 1
autoscaling: {minReplicas: 2, maxReplicas: 5}
storage: {postgres: {secretRef: {name: medops-db-app}}}`},
		{"autoscaling with replicas in range (kubectl scale)", `
replicas: 3
autoscaling: {minReplicas: 2, maxReplicas: 5}
storage: {postgres: {secretRef: {name: medops-db-app, key: dsn}}}`},
		{"postgres with three replicas", `
replicas: 3
storage: {postgres: {secretRef: {name: medops-db-app}}}`},
		{"postgres with ephemeral false", `
replicas: 2
storage: {ephemeral: false, postgres: {secretRef: {name: medops-db-app}}}`},
		{"ephemeral storage with replicas and autoscaling", `
autoscaling: {maxReplicas: 4}
storage: {ephemeral: true, size: 256Mi}`},
		{"ephemeral storage with three replicas", `
replicas: 3
storage: {ephemeral: true}`},
		{"gateway only with three replicas and autoscaling, no task store", `
replicas: 3
autoscaling: {maxReplicas: 6}
modules: {tasks: {enabled: false}, gateway: {enabled: true, upstreams: [{name: ensembl, url: "https://rest.ensembl.org"}]}}`},
		{"gateway with mirrors in regions and a budget", `
modules:
  gateway:
    enabled: true
    upstreams:
    - name: ensembl
      url: https://rest.ensembl.org
      region: eu-west-2
      mirrors: [{url: "https://asia.rest.example/rest", region: ap-southeast-1}, {url: "http://10.0.0.7:8080"}]
      rateLimit: {requestsPerSecond: 15, burst: 3, maxWait: 0s}`},
		{"one replica with the default storage", `replicas: 1`},
		{"zero replicas with the default storage", `replicas: 0`},
		{"persistent storage with one replica", `
replicas: 1
storage: {size: 2Gi, storageClassName: local-path, retainOnDelete: false}`},
		{"entry exactly one shard, integer size", `
cache: {size: 16777216, shards: 16, maxEntrySize: 1Mi}`},
		{"shared cache deployed by the operator", `
cache: {shared: {deploy: true, size: 128Mi, timeout: 20ms}}`},
		{"shared cache on existing servers and a Service name", `
cache: {shared: {memcached: {addresses: ["10.0.0.5:11211", "memcached.cache.svc", "[fd00::5]:11211"]}}}`},
		{"tiny cache with small entries", `
cache: {size: 4Mi, shards: 4, maxEntrySize: 512Ki}`},
		{"tls with host", `
ingress: {enabled: true, host: api.example.org, tls: {secretName: api-tls}, proxyReadTimeout: 90s, proxyBodySize: 8Mi, limitRPS: 20}`},
		{"pdb with percentage", `podDisruptionBudget: {maxUnavailable: "50%"}`},
		{"all architectures", `architectures: [amd64, arm64, arm]`},
		{"auth disabled", `auth: {disabled: true}`},
		{"route on several listeners with timeouts", `
route:
  enabled: true
  parentRefs: [{name: shared, namespace: gateways, sectionName: https}, {name: internal}]
  hostnames: [api.example.org, "*.lab.example.org"]
  path: /medops
  timeouts: {request: 1m30s, backendRequest: 30s}`},
		{"route timeouts off", `
route: {enabled: true, parentRefs: [{name: gw}], timeouts: {request: 0s, backendRequest: 2m}}`},
		{"route switched off without parents", `route: {enabled: false}`},
		{"route together with ingress", `
ingress: {enabled: true, host: old.example.org}
route: {enabled: true, parentRefs: [{name: gw}], hostnames: [new.example.org]}`},
		{"service monitor with labels", `
monitoring: {serviceMonitor: {enabled: true, labels: {release: kube-prometheus-stack}, interval: 1m30s}, prometheusNamespace: monitoring}`},
	}
	ns := createNamespace(t, "valid")
	for i, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			obj := newObject(t, ns, fmt.Sprintf("ok-%d", i), tc.spec)
			if err := k8s.Create(ctxT(t), obj); err != nil {
				t.Fatalf("apiserver refused a valid MedOpsAPI:\n%s\n%v", tc.spec, err)
			}
		})
	}
}

// TestSamplesAreAccepted creates every sample a user would copy.
func TestSamplesAreAccepted(t *testing.T) {
	files := sampleFiles(t)
	ns := createNamespace(t, "samples")
	for _, f := range files {
		t.Run(filepath.Base(f), func(t *testing.T) {
			obj := readSample(t, f)
			obj.SetNamespace(ns)
			if err := k8s.Create(ctxT(t), obj); err != nil {
				t.Fatalf("apiserver refused sample %s: %v", f, err)
			}
		})
	}
}

// TestGoDefaultsMatchAPIServerDefaults checks that SetDefaults, which the
// builders use, and the CRD's default markers, which the apiserver applies,
// give the same spec: read back what the apiserver stored, default it in Go,
// and compare with Go-defaulting the object as written.
func TestGoDefaultsMatchAPIServerDefaults(t *testing.T) {
	specs := map[string]string{
		"empty": `{}`,
		"every optional block": `
autoscaling: {maxReplicas: 3}
storage: {ephemeral: true}
ingress: {enabled: true, host: a.example}
networkPolicy: {enabled: true}
auth: {tokenSecretRef: {name: t}}
podDisruptionBudget: {minAvailable: 1}
route: {enabled: true, parentRefs: [{name: gw}], hostnames: [a.example]}
monitoring: {serviceMonitor: {enabled: true}}`,
		"postgres": `
replicas: 3
storage: {postgres: {secretRef: {name: medops-db-app}}}`,
		"claim with a size only": `storage: {size: 2Gi}`,
	}
	for _, f := range sampleFiles(t) {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		var m v1alpha1.MedOpsAPI
		if err := yaml.UnmarshalStrict(b, &m); err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		s, _ := yaml.Marshal(m.Spec)
		specs[filepath.Base(f)] = string(s)
	}
	ns := createNamespace(t, "defaults")
	i := 0
	for name, spec := range specs {
		i++
		t.Run(name, func(t *testing.T) {
			var local v1alpha1.MedOpsAPISpec
			if err := yaml.UnmarshalStrict([]byte(spec), &local); err != nil {
				t.Fatal(err)
			}
			obj := &v1alpha1.MedOpsAPI{ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("d-%d", i), Namespace: ns}, Spec: *local.DeepCopy()}
			ctx := ctxT(t)
			if err := k8s.Create(ctx, obj); err != nil {
				t.Fatal(err)
			}
			var stored v1alpha1.MedOpsAPI
			if err := k8s.Get(ctx, client.ObjectKeyFromObject(obj), &stored); err != nil {
				t.Fatal(err)
			}
			serverOnly := stored.Spec.DeepCopy()
			local.SetDefaults()
			stored.Spec.SetDefaults()
			if !equality.Semantic.DeepEqual(local, stored.Spec) {
				a, _ := yaml.Marshal(local)
				b, _ := yaml.Marshal(stored.Spec)
				t.Errorf("Go defaults and apiserver defaults differ:\nGo:\n%s\napiserver + Go:\n%s", a, b)
			}
			// The apiserver must really default something, or this test
			// would compare SetDefaults with itself.
			if serverOnly.Image != v1alpha1.DefaultImage || serverOnly.Service.Port != v1alpha1.DefaultServicePort {
				t.Errorf("apiserver did not apply the CRD defaults: image %q port %d", serverOnly.Image, serverOnly.Service.Port)
			}
		})
	}
}

func sampleFiles(t *testing.T) []string {
	t.Helper()
	files, err := filepath.Glob(filepath.Join(repo.Root(), "config", "samples", "medops_v1alpha1_*.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	if len(files) < 3 {
		t.Fatalf("want at least 3 samples in config/samples, found %v", files)
	}
	return files
}

func readSample(t *testing.T, path string) *unstructured.Unstructured {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	obj := &unstructured.Unstructured{}
	if err := yaml.Unmarshal(b, &obj.Object); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	return obj
}

// TestStorageUpdatesAPVCCannotFollowAreRefused: a claim's class is fixed
// and its size only grows, so such spec updates are refused at once instead
// of leaving the operator failing to apply them. An unset storage is the
// default claim (1Gi, default class), so it counts as one too.
func TestStorageUpdatesAPVCCannotFollowAreRefused(t *testing.T) {
	cases := []struct {
		name, before, after, want string
	}{
		{"class changed", `storage: {size: 1Gi, storageClassName: local-path}`,
			`storage: {size: 1Gi, storageClassName: fast}`, "storage.storageClassName cannot be changed"},
		{"class added", `storage: {size: 1Gi}`,
			`storage: {size: 1Gi, storageClassName: fast}`, "storage.storageClassName cannot be changed"},
		{"class removed", `storage: {storageClassName: local-path}`,
			`storage: {}`, "storage.storageClassName cannot be changed"},
		// Unset storage is a claim of the default class and size too.
		{"class set where storage was unset", `{}`,
			`storage: {storageClassName: fast}`, "storage.storageClassName cannot be changed"},
		{"storage unset after a class was set", `storage: {storageClassName: fast}`,
			`{}`, "storage.storageClassName cannot be changed"},
		{"size shrunk", `storage: {size: 2Gi}`, `storage: {size: 1Gi}`, "storage.size cannot shrink"},
		{"size below the default where storage was unset", `{}`, `storage: {size: 512Mi}`, "storage.size cannot shrink (unset is 1Gi)"},
		{"size removed after growing", `storage: {size: 2Gi}`, `storage: {}`, "storage.size cannot shrink"},
		{"size grown", `storage: {size: 1Gi}`, `storage: {size: 2048Mi}`, ""},
		{"size grown where storage was unset", `{}`, `storage: {size: 2Gi}`, ""},
		{"default size written out", `{}`, `storage: {size: 1Gi, retainOnDelete: true}`, ""},
		{"ephemeral size shrunk", `storage: {ephemeral: true, size: 2Gi}`, `storage: {ephemeral: true, size: 1Gi}`, ""},
		// The claim stays (retained) but is no longer used: its class and
		// size no longer matter.
		{"claim to postgres", `storage: {size: 2Gi, storageClassName: local-path}`,
			`storage: {postgres: {secretRef: {name: medops-db-app}}}`, ""},
		{"claim to postgres with three replicas at once", `{}`,
			`{replicas: 3, storage: {postgres: {secretRef: {name: medops-db-app}}}}`, ""},
		{"postgres Secret renamed", `storage: {postgres: {secretRef: {name: medops-db-app}}}`,
			`storage: {postgres: {secretRef: {name: medops-db2-app}}}`, ""},
	}
	ns := createNamespace(t, "transitions")
	for i, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			ctx := ctxT(t)
			obj := newObject(t, ns, fmt.Sprintf("tr-%d", i), tc.before)
			if err := k8s.Create(ctx, obj); err != nil {
				t.Fatal(err)
			}
			next := newObject(t, ns, obj.GetName(), tc.after)
			next.SetResourceVersion(obj.GetResourceVersion())
			err := k8s.Update(ctx, next)
			switch {
			case tc.want == "" && err != nil:
				t.Fatalf("update refused: %v", err)
			case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
				t.Fatalf("update error %v, want one saying %q", err, tc.want)
			}
		})
	}
}

// TestTaskStoreRuleMatchesTheCRD ties ValidateTaskStore (the operator's
// guard for objects stored before the CEL rules) to those rules: the
// apiserver refuses what it refuses, with its message, and accepts the rest.
func TestTaskStoreRuleMatchesTheCRD(t *testing.T) {
	specs := []string{
		`replicas: 2`,
		`autoscaling: {maxReplicas: 3}`,
		"replicas: 2\nautoscaling: {maxReplicas: 3}",
		"replicas: 2\nstorage: {storageClassName: local-path}",
		"replicas: 3\nstorage: {ephemeral: true}",
		"replicas: 3\nstorage: {postgres: {secretRef: {name: db-app}}}",
		"autoscaling: {maxReplicas: 3}\nmodules: {tasks: {enabled: false}}",
		`replicas: 1`,
	}
	ns := createNamespace(t, "taskstore")
	for i, spec := range specs {
		t.Run(spec, func(t *testing.T) {
			var s v1alpha1.MedOpsAPISpec
			if err := yaml.UnmarshalStrict([]byte(spec), &s); err != nil {
				t.Fatal(err)
			}
			s.SetDefaults()
			goErr := s.ValidateTaskStore()
			apiErr := k8s.Create(ctxT(t), newObject(t, ns, fmt.Sprintf("ts-%d", i), spec))
			switch {
			case goErr == nil && apiErr != nil:
				t.Errorf("apiserver refuses what the operator would build: %v", apiErr)
			case goErr != nil && apiErr == nil:
				t.Errorf("apiserver accepts what the operator refuses: %v", goErr)
			case goErr != nil && !strings.Contains(apiErr.Error(), goErr.Detail):
				t.Errorf("messages differ:\napiserver: %v\noperator:  %s", apiErr, goErr.Detail)
			}
		})
	}
}
