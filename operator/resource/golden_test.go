package operator_test

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
	"github.com/medops/medops/internal/testenv"
	"github.com/medops/medops/operator"
)

var update = flag.Bool("update", false, "rewrite operator/testdata/*.golden.yaml from the builders' output")

const testUID = types.UID("0f9c1d2e-0000-4000-8000-000000000001")

// scenario is one MedOpsAPI the builders are checked on; spec is YAML, or
// sample names a file in config/samples.
type scenario struct {
	name   string
	spec   string
	sample string
}

func scenarios() []scenario {
	return []scenario{
		{name: "minimal", sample: "medops_v1alpha1_medopsapi_minimal.yaml"},
		{name: "raspberry-pi", sample: "medops_v1alpha1_medopsapi_raspberrypi.yaml"},
		{name: "gateway-ingress-tls", sample: "medops_v1alpha1_medopsapi_gateway.yaml"},
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
	}
}

// load builds the MedOpsAPI of a scenario, as the reconciler would get it
// before any apiserver defaulting.
func load(t *testing.T, sc scenario) *v1alpha1.MedOpsAPI {
	t.Helper()
	m := &v1alpha1.MedOpsAPI{}
	if sc.sample != "" {
		b, err := os.ReadFile(filepath.Join(testenv.RepoRoot(), "config", "samples", sc.sample))
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

func inputsFor(m *v1alpha1.MedOpsAPI) operator.Inputs {
	if m.Spec.Auth.Disabled {
		return operator.Inputs{}
	}
	name := operator.TokenSecretName(m)
	if ref := m.Spec.Auth.TokenSecretRef; ref != nil {
		name = ref.Name
	}
	return operator.Inputs{TokenSecretName: name, SecretHash: "5ecre7ha5h"}
}

// TestChildrenGolden compares every child of every scenario with its golden
// file. Run `go test ./operator -run TestChildrenGolden -update` after an
// intended change and review the diff.
func TestChildrenGolden(t *testing.T) {
	for _, sc := range scenarios() {
		t.Run(sc.name, func(t *testing.T) {
			m := load(t, sc)
			children, err := operator.Children(m, inputsFor(m))
			if err != nil {
				t.Fatalf("Children: %v", err)
			}
			got := render(t, children)
			path := filepath.Join("testdata", sc.name+".golden.yaml")
			if *update {
				if err := os.MkdirAll("testdata", 0o755); err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(path, got, 0o644); err != nil {
					t.Fatal(err)
				}
				return
			}
			want, err := os.ReadFile(path)
			if err != nil {
				t.Fatalf("%v (run with -update to create it)", err)
			}
			if !bytes.Equal(got, want) {
				t.Errorf("children of %s differ from %s (run with -update and review the diff):\n%s", sc.name, path, lineDiff(string(want), string(got)))
			}
		})
	}
}

// render writes the children as one YAML stream, each preceded by whether
// it is wanted, without the empty creationTimestamp and status that typed
// objects always carry.
func render(t *testing.T, children []operator.Child) []byte {
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

// lineDiff shows the first lines that differ, enough to see what changed.
func lineDiff(want, got string) string {
	wl, gl := bytes.Split([]byte(want), []byte("\n")), bytes.Split([]byte(got), []byte("\n"))
	var out bytes.Buffer
	shown := 0
	for i := 0; i < len(wl) || i < len(gl); i++ {
		var w, g []byte
		if i < len(wl) {
			w = wl[i]
		}
		if i < len(gl) {
			g = gl[i]
		}
		if !bytes.Equal(w, g) {
			fmt.Fprintf(&out, "line %d:\n  want: %s\n  got:  %s\n", i+1, w, g)
			if shown++; shown >= 10 {
				break
			}
		}
	}
	return out.String()
}
