package resource_test

import (
	"bytes"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/yaml"

	"github.com/medops/medops/api/v1alpha1"
	"github.com/medops/medops/internal/golden"
	"github.com/medops/medops/internal/repo"
	"github.com/medops/medops/operator/resource"
)

var update = flag.Bool("update", false, "rewrite operator/resource/testdata/*.golden.yaml from the builders' output")

const testUID = types.UID("0f9c1d2e-0000-4000-8000-000000000001")

// scenario is one MedOpsAPI the builders are checked on; spec is YAML, or
// sample names a file in config/samples.
type scenario struct {
	name   string
	spec   string
	sample string
}

func scenarios() []scenario {
	return append([]scenario{
		{name: "minimal", sample: "medops_v1alpha1_medopsapi_minimal.yaml"},
		{name: "raspberry-pi", sample: "medops_v1alpha1_medopsapi_raspberrypi.yaml"},
		{name: "gateway-ingress-tls", sample: "medops_v1alpha1_medopsapi_gateway.yaml"},
		{name: "ha", sample: "medops_v1alpha1_medopsapi_ha.yaml"},
		{name: "postgres", spec: `
replicas: 2
storage: {postgres: {secretRef: {name: medops-db-app, key: dsn}}}`},
		{name: "ephemeral-replicas", spec: `
replicas: 3
storage: {ephemeral: true}`},
		{name: "autoscaling", spec: `
autoscaling: {minReplicas: 2, maxReplicas: 6, targetCPUUtilizationPercentage: 70}
storage: {ephemeral: true, size: 512Mi}
topologySpreadConstraints:
- {maxSkew: 1, topologyKey: topology.kubernetes.io/zone, whenUnsatisfiable: ScheduleAnyway}
podDisruptionBudget: {maxUnavailable: 1}`},
		{name: "storage-retained", spec: `
storage: {size: 2Gi, storageClassName: local-path}`},
		{name: "storage-not-retained", spec: `
storage: {size: 2Gi, retainOnDelete: false}`},
		{name: "auth-disabled", spec: `
auth: {disabled: true}
service: {type: NodePort, port: 8080, annotations: {example.org/team: genomics}}`},
		{name: "scheduling-and-networkpolicy", spec: `
image: registry.local/medops-api:v0.2.0
imagePullPolicy: Always
imagePullSecrets: [{name: regcred}]
architectures: [arm64, arm]
affinity:
  nodeAffinity:
    requiredDuringSchedulingIgnoredDuringExecution:
      nodeSelectorTerms:
      - matchExpressions: [{key: node-role.medops.io/api, operator: Exists}]
nodeSelector: {disktype: ssd}
tolerations: [{key: dedicated, operator: Equal, value: medops, effect: NoSchedule}]
podLabels: {team: genomics, app.kubernetes.io/instance: hijack}
podAnnotations: {prometheus.io/scrape: "true"}
env: [{name: TZ, value: Europe/Berlin}]
logLevel: debug
ingress:
  enabled: true
  className: traefik
  host: api.lab.local
  path: /medops
  annotations: {traefik.ingress.kubernetes.io/router.entrypoints: web, nginx.ingress.kubernetes.io/limit-rps: "999"}
  limitRPS: 5
networkPolicy: {enabled: true, ingressControllerNamespace: kube-system}`},
		// A gateway of three replicas with the shared cache tier the
		// operator runs, on Ensembl's 15/s.
		{name: "gateway-shared-deploy", spec: `
replicas: 3
modules:
  tasks: {enabled: false}
  gateway:
    enabled: true
    upstreams: [{name: ensembl, url: "https://rest.ensembl.org", rateLimit: {requestsPerSecond: 15, burst: 5}}]
cache: {shared: {deploy: true, size: 256Mi}}`},
		// The shared tier on a memcached that runs elsewhere.
		{name: "gateway-shared-addresses", spec: `
replicas: 2
modules:
  tasks: {enabled: false}
  gateway:
    enabled: true
    upstreams: [{name: ensembl, url: "https://rest.ensembl.org"}]
cache: {shared: {memcached: {addresses: ["memcached.cache.svc", "10.0.0.7:11211"]}, timeout: 20ms}}`},
		// A migration from an Ingress to Gateway API: both on, the route on
		// two listeners of a shared Gateway, scraped by a Prometheus of
		// kube-prometheus-stack through the NetworkPolicy.
		{name: "route-and-monitoring", spec: `
ingress: {enabled: true, className: traefik, host: old.lab.local}
route:
  enabled: true
  parentRefs:
  - {name: shared, namespace: gateways, sectionName: https}
  - {name: internal}
  hostnames: [api.lab.local, "*.medops.lab.local"]
  path: /medops
  timeouts: {request: 1m30s, backendRequest: 30s}
service: {port: 8080}
monitoring:
  serviceMonitor: {enabled: true, labels: {release: kube-prometheus-stack, app.kubernetes.io/instance: hijack}, interval: 15s}
  prometheusNamespace: monitoring
networkPolicy: {enabled: true, ingressControllerNamespace: kube-system}`},
	}, backupScenarios()...)
}

// load builds the MedOpsAPI of a scenario, as the reconciler would get it
// before any apiserver defaulting.
func load(t *testing.T, sc scenario) *v1alpha1.MedOpsAPI {
	t.Helper()
	m := &v1alpha1.MedOpsAPI{}
	if sc.sample != "" {
		b, err := os.ReadFile(filepath.Join(repo.Root(), "config", "samples", sc.sample))
		if err != nil {
			t.Fatal(err)
		}
		if err := yaml.UnmarshalStrict(b, m); err != nil {
			t.Fatalf("sample %s: %v", sc.sample, err)
		}
	} else {
		if err := yaml.UnmarshalStrict([]byte(sc.spec), &m.Spec); err != nil {
			t.Fatalf("scenario %s: %v", sc.name, err)
		}
		m.Name = "medops"
	}
	m.Namespace = "lab"
	m.UID = testUID
	m.Generation = 1
	return m
}

func inputsFor(m *v1alpha1.MedOpsAPI) resource.Inputs {
	if m.Spec.Auth.Disabled {
		return resource.Inputs{}
	}
	name := resource.TokenSecretName(m)
	if ref := m.Spec.Auth.TokenSecretRef; ref != nil {
		name = ref.Name
	}
	return resource.Inputs{TokenSecretName: name}
}

// prepare is resource.Prepare for a spec that must be valid.
func prepare(t *testing.T, m *v1alpha1.MedOpsAPI, in resource.Inputs) *resource.Desired {
	t.Helper()
	d, err := resource.Prepare(m, in)
	if err != nil {
		t.Fatalf("Prepare: %v", err)
	}
	return d
}

// TestChildrenGolden compares every child of every scenario with its golden
// file. Run `go test ./operator/resource -run TestChildrenGolden -update`
// after an intended change and review the diff.
func TestChildrenGolden(t *testing.T) {
	for _, sc := range scenarios() {
		t.Run(sc.name, func(t *testing.T) {
			m := load(t, sc)
			children := prepare(t, m, inputsFor(m)).Children(resource.Kinds())
			golden.Compare(t, filepath.Join("testdata", sc.name+".golden.yaml"), render(t, children), *update)
		})
	}
}

// render writes the children as one YAML stream, each preceded by whether
// it is wanted, without the empty creationTimestamp and status that typed
// objects always carry.
func render(t *testing.T, children []resource.Child) []byte {
	t.Helper()
	var buf bytes.Buffer
	for _, c := range children {
		j, err := json.Marshal(c.Object)
		if err != nil {
			t.Fatal(err)
		}
		var doc map[string]any
		if err := json.Unmarshal(j, &doc); err != nil {
			t.Fatal(err)
		}
		delete(doc, "status")
		if !c.Wanted {
			// Only the identity of an unwanted child matters.
			delete(doc, "spec")
		}
		if md, ok := doc["metadata"].(map[string]any); ok {
			delete(md, "creationTimestamp")
		}
		stripNullTimestamps(doc)
		y, err := yaml.Marshal(doc)
		if err != nil {
			t.Fatal(err)
		}
		state := "wanted"
		if !c.Wanted {
			state = "absent (deleted when owned)"
		}
		fmt.Fprintf(&buf, "---\n# %s %s: %s\n%s", kindOf(c.Object), c.Object.GetName(), state, y)
	}
	return buf.Bytes()
}

// stripNullTimestamps drops the creationTimestamp: null of embedded object
// metadata (the pod template's).
func stripNullTimestamps(v any) {
	switch x := v.(type) {
	case map[string]any:
		for k, val := range x {
			if k == "creationTimestamp" && val == nil {
				delete(x, k)
				continue
			}
			stripNullTimestamps(val)
		}
	case []any:
		for _, e := range x {
			stripNullTimestamps(e)
		}
	}
}

func kindOf(o client.Object) string { return o.GetObjectKind().GroupVersionKind().Kind }
