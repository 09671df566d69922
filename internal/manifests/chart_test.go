package manifests

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
	"sigs.k8s.io/yaml"

	"github.com/medops/medops/internal/repo"
	"github.com/medops/medops/internal/testenv"
)

func chartDir() string { return filepath.Join(repo.Root(), "charts", "medops-operator") }

// helmBinary finds the pinned helm: MEDOPS_HELM (set by `make test`), or
// hack/tools.sh, which builds it once into bin/.
func helmBinary(t *testing.T) string {
	t.Helper()
	return testenv.Tool(t, "helm", "MEDOPS_HELM")
}

// helm runs the pinned helm with its caches and config in a temporary
// folder, so tests never read or change the developer's helm setup.
type helm struct {
	bin, home, kubeconfig string
}

func newHelm(t *testing.T) *helm {
	return &helm{bin: helmBinary(t), home: t.TempDir()}
}

func (h *helm) run(t *testing.T, args ...string) ([]byte, error) {
	t.Helper()
	if h.kubeconfig != "" {
		args = append(args, "--kubeconfig", h.kubeconfig)
	}
	cmd := exec.Command(h.bin, args...)
	cmd.Env = append(os.Environ(),
		"HELM_CACHE_HOME="+filepath.Join(h.home, "cache"),
		"HELM_CONFIG_HOME="+filepath.Join(h.home, "config"),
		"HELM_DATA_HOME="+filepath.Join(h.home, "data"),
		"KUBECONFIG="+h.kubeconfig,
	)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return out, &helmError{args: args, err: err, stderr: stderr.String()}
	}
	return out, nil
}

type helmError struct {
	args   []string
	err    error
	stderr string
}

func (e *helmError) Error() string {
	return "helm " + strings.Join(e.args, " ") + ": " + e.err.Error() + ": " + e.stderr
}

func (h *helm) mustRun(t *testing.T, args ...string) []byte {
	t.Helper()
	out, err := h.run(t, args...)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// TestChartFilesMatchGenerated: the chart's CRD and operator rules are
// copies of what controller-gen generates (`make manifests` refreshes them),
// so a chart user gets exactly the API and permissions of the kustomize install.
func TestChartFilesMatchGenerated(t *testing.T) {
	bases, _ := filepath.Glob(filepath.Join(configDir("crd", "bases"), "*.yaml"))
	copies, _ := filepath.Glob(filepath.Join(chartDir(), "files", "crds", "*.yaml"))
	if len(bases) == 0 {
		t.Fatal("no CRDs in config/crd/bases (run make manifests)")
	}
	names := func(paths []string) (out []string) {
		for _, p := range paths {
			out = append(out, filepath.Base(p))
		}
		return out
	}
	if !slices.Equal(names(bases), names(copies)) {
		t.Errorf("chart CRDs %v differ from config/crd/bases %v: run make manifests", names(copies), names(bases))
	}
	pairs := map[string]string{filepath.Join(configDir("rbac"), "role.yaml"): filepath.Join(chartDir(), "files", "rbac", "role.yaml")}
	for _, b := range bases {
		pairs[b] = filepath.Join(chartDir(), "files", "crds", filepath.Base(b))
	}
	for gen, cp := range pairs {
		want, err := os.ReadFile(gen)
		if err != nil {
			t.Fatal(err)
		}
		got, err := os.ReadFile(cp)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, want) {
			t.Errorf("%s is not a copy of %s: run make manifests", cp, gen)
		}
	}
}

func TestHelmLint(t *testing.T) {
	h := newHelm(t)
	valueFiles, _ := filepath.Glob(filepath.Join(chartDir(), "ci", "*-values.yaml"))
	if len(valueFiles) < 3 {
		t.Fatalf("want at least 3 values files in ci/, found %v", valueFiles)
	}
	for _, vf := range append([]string{""}, valueFiles...) {
		name := filepath.Base(vf)
		if vf == "" {
			name = "defaults"
		}
		t.Run(name, func(t *testing.T) {
			args := []string{"lint", "--strict", chartDir()}
			if vf != "" {
				args = append(args, "-f", vf)
			}
			h.mustRun(t, args...)
		})
	}
}

// TestHelmRefusesBadValues: values.schema.json turns typos and nonsense
// into an error naming the field, before anything reaches the cluster.
func TestHelmRefusesBadValues(t *testing.T) {
	h := newHelm(t)
	tests := []struct{ set, wantField string }{
		{"replicaCount=-1", "/replicaCount"},
		{"metrics.prot=1", "prot"},
		{"resources.limits.memory=lots", "/resources/limits/memory"},
		{"image.pullPolicy=Sometimes", "/image/pullPolicy"},
		{"watchNamespace=Not_A_Namespace", "/watchNamespace"},
		{"crds.install=yes", "/crds/install"},
	}
	for _, tt := range tests {
		t.Run(tt.set, func(t *testing.T) {
			_, err := h.run(t, "template", "medops-operator", chartDir(), "--set", tt.set)
			if err == nil {
				t.Fatalf("helm template --set %s succeeded; want a schema error", tt.set)
			}
			if !strings.Contains(err.Error(), tt.wantField) {
				t.Errorf("error does not name %s: %v", tt.wantField, err)
			}
		})
	}
}

// TestHelmTemplate renders the chart with each values file and checks what
// a user of that configuration gets; the whole output (but the CRD, checked
// against config/crd/bases) is pinned in golden files.
func TestHelmTemplate(t *testing.T) {
	h := newHelm(t)
	baseCRD := readObjects(t, filepath.Join(configDir("crd", "bases"), "medops.io_medopsapis.yaml"))[0]
	generatedRules := readObjects(t, filepath.Join(configDir("rbac"), "role.yaml"))[0].Object["rules"]
	kustomized := buildObjects(t, configDir("default"))

	tests := []struct {
		name, values string
		wantImage    string
		wantSA       string
		wantCRD      bool
		wantRBAC     bool
		wantMetrics  bool
		// wantManagerBinding is the kind that grants the operator's rules.
		wantManagerBinding string
		wantArgs           []string
		check              func(t *testing.T, objs []unstructured.Unstructured, byID map[string]unstructured.Unstructured)
	}{
		{
			name: "defaults", wantImage: "ghcr.io/medops/medops-operator:v0.1.0", wantSA: "medops-operator",
			wantCRD: true, wantRBAC: true, wantMetrics: true, wantManagerBinding: "ClusterRoleBinding",
			wantArgs: []string{"--leader-elect", "--metrics-bind-address=:8443", "--health-probe-bind-address=:8081"},
			check: func(t *testing.T, objs []unstructured.Unstructured, byID map[string]unstructured.Unstructured) {
				// The chart's Deployment is hardened exactly like the kustomize one.
				chartC := container(t, byID["Deployment/medops-operator"])
				for _, o := range kustomized {
					if o.GetKind() != "Deployment" {
						continue
					}
					kc := container(t, o)
					for _, f := range []string{"securityContext", "livenessProbe", "readinessProbe", "resources", "command", "env", "volumeMounts"} {
						if !reflect.DeepEqual(chartC[f], kc[f]) {
							t.Errorf("container %s differs between the chart (%v) and config/manager (%v)", f, chartC[f], kc[f])
						}
					}
				}
			},
		},
		{
			name: "pi", values: "pi-values.yaml", wantImage: "ghcr.io/medops/medops-operator:dev", wantSA: "medops-operator",
			wantCRD: true, wantRBAC: true, wantMetrics: true, wantManagerBinding: "ClusterRoleBinding",
			wantArgs: []string{"--metrics-bind-address=:8443"},
			check: func(t *testing.T, objs []unstructured.Unstructured, byID map[string]unstructured.Unstructured) {
				dep := byID["Deployment/medops-operator"]
				if c := container(t, dep); c["imagePullPolicy"] != "Never" || slices.Contains(argsOf(c), "--leader-elect") {
					t.Errorf("pi: pullPolicy %v args %v; want Never (imported image) and no leader election", c["imagePullPolicy"], argsOf(c))
				}
				sel, _, _ := unstructured.NestedStringMap(dep.Object, "spec", "template", "spec", "nodeSelector")
				if sel["kubernetes.io/arch"] != "arm64" {
					t.Errorf("pi: nodeSelector %v, want kubernetes.io/arch=arm64", sel)
				}
				if _, ok := byID["Role/medops-operator-leader-election-role"]; ok {
					t.Error("pi: leader election Role rendered though leader election is off")
				}
			},
		},
		{
			name: "watch-namespace", values: "watch-namespace-values.yaml", wantImage: "ghcr.io/medops/medops-operator:v0.1.0", wantSA: "medops-team-operator",
			wantCRD: true, wantRBAC: true, wantMetrics: false, wantManagerBinding: "RoleBinding",
			wantArgs: []string{"--watch-namespace=medops-team,medops-lab", "--max-concurrent-reconciles=2", "--metrics-bind-address=0"},
			check: func(t *testing.T, objs []unstructured.Unstructured, byID map[string]unstructured.Unstructured) {
				// One RoleBinding per watched namespace, none elsewhere.
				var namespaces []string
				for _, o := range objs {
					if o.GetKind() == "RoleBinding" && o.GetName() == "medops-operator-manager-rolebinding" {
						namespaces = append(namespaces, o.GetNamespace())
					}
				}
				if want := []string{"medops-team", "medops-lab"}; !slices.Equal(namespaces, want) {
					t.Errorf("manager RoleBindings in namespaces %v, want the watched %v", namespaces, want)
				}
				if _, ok := byID["ClusterRoleBinding/medops-operator-manager-rolebinding"]; ok {
					t.Error("watching one namespace still binds the operator's rules cluster-wide")
				}
			},
		},
		{
			name: "no-crds", values: "no-crds-values.yaml", wantImage: "ghcr.io/medops/medops-operator:v0.1.0", wantSA: "existing-operator",
			wantCRD: false, wantRBAC: false, wantMetrics: true,
			wantArgs: []string{"--leader-elect"},
			check: func(t *testing.T, objs []unstructured.Unstructured, byID map[string]unstructured.Unstructured) {
				if _, ok := byID["ServiceAccount/existing-operator"]; ok {
					t.Error("serviceAccount.create=false still renders a ServiceAccount")
				}
				if r, _, _ := unstructured.NestedInt64(byID["Deployment/medops-operator"].Object, "spec", "replicas"); r != 2 {
					t.Errorf("replicas = %d, want 2", r)
				}
			},
		},
		{
			name: "monitoring", values: "monitoring-values.yaml", wantImage: "ghcr.io/medops/medops-operator:v0.1.0", wantSA: "medops-operator",
			wantCRD: true, wantRBAC: true, wantMetrics: true, wantManagerBinding: "ClusterRoleBinding",
			wantArgs: []string{"--metrics-bind-address=:8443"},
			check:    checkMonitoring,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			args := []string{"template", "medops-operator", chartDir(), "--namespace", "medops-system"}
			if tt.values != "" {
				args = append(args, "-f", filepath.Join(chartDir(), "ci", tt.values))
			}
			objs, err := Split(h.mustRun(t, args...))
			if err != nil {
				t.Fatal(err)
			}
			byID := map[string]unstructured.Unstructured{}
			for _, o := range objs {
				byID[o.GetKind()+"/"+o.GetName()] = o
			}

			crd, hasCRD := byID["CustomResourceDefinition/medopsapis.medops.io"]
			if hasCRD != tt.wantCRD {
				t.Errorf("CRD rendered = %v, want %v", hasCRD, tt.wantCRD)
			}
			if hasCRD {
				if !reflect.DeepEqual(crd.Object["spec"], baseCRD.Object["spec"]) {
					t.Error("the chart's CRD spec differs from config/crd/bases")
				}
				if crd.GetAnnotations()["helm.sh/resource-policy"] != "keep" {
					t.Errorf("CRD annotations %v lack helm.sh/resource-policy: keep (crds.keep defaults to true)", crd.GetAnnotations())
				}
				for k, v := range baseCRD.GetAnnotations() {
					if crd.GetAnnotations()[k] != v {
						t.Errorf("CRD lost the generated annotation %s=%s", k, v)
					}
				}
			}

			role, hasRole := byID["ClusterRole/medops-operator-manager-role"]
			if hasRole != tt.wantRBAC {
				t.Errorf("manager ClusterRole rendered = %v, want %v", hasRole, tt.wantRBAC)
			}
			if hasRole {
				if !reflect.DeepEqual(role.Object["rules"], generatedRules) {
					t.Errorf("chart manager rules differ from config/rbac/role.yaml")
				}
				binding, ok := byID[tt.wantManagerBinding+"/medops-operator-manager-rolebinding"]
				if !ok {
					t.Fatalf("no %s for the manager role in %v", tt.wantManagerBinding, kindNames(objs))
				}
				subjects, _, _ := unstructured.NestedSlice(binding.Object, "subjects")
				if len(subjects) != 1 || subjects[0].(map[string]any)["name"] != tt.wantSA || subjects[0].(map[string]any)["namespace"] != "medops-system" {
					t.Errorf("manager binding subjects %v, want ServiceAccount medops-system/%s", subjects, tt.wantSA)
				}
				checkLeastPrivilege(t, objs)
			}

			dep, ok := byID["Deployment/medops-operator"]
			if !ok {
				t.Fatalf("no Deployment medops-operator in %v", kindNames(objs))
			}
			c := container(t, dep)
			if c["image"] != tt.wantImage {
				t.Errorf("image = %v, want %s", c["image"], tt.wantImage)
			}
			if sa, _, _ := unstructured.NestedString(dep.Object, "spec", "template", "spec", "serviceAccountName"); sa != tt.wantSA {
				t.Errorf("serviceAccountName = %q, want %s", sa, tt.wantSA)
			}
			for _, a := range tt.wantArgs {
				if !slices.Contains(argsOf(c), a) {
					t.Errorf("args %v lack %s", argsOf(c), a)
				}
			}
			if tt.wantMetrics {
				checkManagerDeployment(t, dep, tt.wantImage, tt.wantSA)
				svc, ok := byID["Service/medops-operator-metrics"]
				if !ok {
					t.Fatalf("no metrics Service in %v", kindNames(objs))
				}
				checkMetricsService(t, svc, dep)
			} else if _, ok := byID["Service/medops-operator-metrics"]; ok {
				t.Error("metrics disabled but the metrics Service is rendered")
			}
			for _, o := range objs {
				// Other namespaces only where the values ask for them: the
				// watched namespaces' RoleBindings, and the dashboard next to Grafana.
				if ns := o.GetNamespace(); ns != "" && ns != "medops-system" && !(o.GetKind() == "RoleBinding" && (ns == "medops-team" || ns == "medops-lab")) &&
					!(o.GetKind() == "ConfigMap" && ns == "monitoring") {
					t.Errorf("%s/%s lands in namespace %s", o.GetKind(), o.GetName(), ns)
				}
				if o.GetLabels()["app.kubernetes.io/managed-by"] != "Helm" {
					t.Errorf("%s/%s lacks the managed-by: Helm label", o.GetKind(), o.GetName())
				}
			}
			if tt.check != nil {
				tt.check(t, objs, byID)
			}

			var kept []unstructured.Unstructured
			for _, o := range objs {
				if o.GetKind() != "CustomResourceDefinition" {
					kept = append(kept, o)
				}
			}
			compareGolden(t, "chart-"+tt.name+".golden.yaml", marshalAll(t, kept))
		})
	}
}

func container(t *testing.T, dep unstructured.Unstructured) map[string]any {
	t.Helper()
	cs, _, _ := unstructured.NestedSlice(dep.Object, "spec", "template", "spec", "containers")
	if len(cs) != 1 {
		t.Fatalf("%s has %d containers, want 1", dep.GetName(), len(cs))
	}
	return cs[0].(map[string]any)
}

func argsOf(c map[string]any) []string {
	var out []string
	for _, a := range c["args"].([]any) {
		out = append(out, a.(string))
	}
	return out
}

var (
	crdGVR        = schema.GroupVersionResource{Group: "apiextensions.k8s.io", Version: "v1", Resource: "customresourcedefinitions"}
	deploymentGVR = schema.GroupVersionResource{Group: "apps", Version: "v1", Resource: "deployments"}
	medopsGVR     = schema.GroupVersionResource{Group: "medops.io", Version: "v1alpha1", Resource: "medopsapis"}
)

// TestHelmInstallUpgradeUninstall installs the chart into a real
// kube-apiserver (envtest: no controllers, so nothing waits for pods), reads
// the objects back, creates a MedOpsAPI through the installed CRD, upgrades
// with a changed CRD and checks the change reached the apiserver (a chart
// with the CRD under crds/ would leave it stale), then uninstalls and checks
// the CRD and the user's MedOpsAPI were kept.
func TestHelmInstallUpgradeUninstall(t *testing.T) {
	h, dyn := helmOnEnvtest(t)
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()

	installOut := h.mustRun(t, "install", "medops-operator", chartDir(), "--namespace", "medops-system", "--create-namespace")

	crd := waitEstablished(ctx, t, dyn)
	if crd.GetAnnotations()["helm.sh/resource-policy"] != "keep" || crd.GetAnnotations()["meta.helm.sh/release-name"] != "medops-operator" {
		t.Errorf("installed CRD annotations %v: want the keep policy and the release", crd.GetAnnotations())
	}
	dep, err := dyn.Resource(deploymentGVR).Namespace("medops-system").Get(ctx, "medops-operator", metav1.GetOptions{})
	if err != nil {
		t.Fatalf("installed Deployment: %v", err)
	}
	checkManagerDeployment(t, *dep, "ghcr.io/medops/medops-operator:v0.1.0", "medops-operator")
	for _, obj := range []struct {
		gvr      schema.GroupVersionResource
		ns, name string
	}{
		{schema.GroupVersionResource{Version: "v1", Resource: "serviceaccounts"}, "medops-system", "medops-operator"},
		{schema.GroupVersionResource{Version: "v1", Resource: "services"}, "medops-system", "medops-operator-metrics"},
		{schema.GroupVersionResource{Group: "rbac.authorization.k8s.io", Version: "v1", Resource: "clusterrolebindings"}, "", "medops-operator-manager-rolebinding"},
		{schema.GroupVersionResource{Group: "rbac.authorization.k8s.io", Version: "v1", Resource: "rolebindings"}, "medops-system", "medops-operator-leader-election-rolebinding"},
		{schema.GroupVersionResource{Group: "rbac.authorization.k8s.io", Version: "v1", Resource: "clusterroles"}, "", "medops-operator-metrics-auth-role"},
	} {
		if _, err := dyn.Resource(obj.gvr).Namespace(obj.ns).Get(ctx, obj.name, metav1.GetOptions{}); err != nil {
			t.Errorf("installed %s %s/%s: %v", obj.gvr.Resource, obj.ns, obj.name, err)
		}
	}
	role, err := dyn.Resource(schema.GroupVersionResource{Group: "rbac.authorization.k8s.io", Version: "v1", Resource: "clusterroles"}).Get(ctx, "medops-operator-manager-role", metav1.GetOptions{})
	if err != nil {
		t.Fatalf("installed manager ClusterRole: %v", err)
	}
	if want := readObjects(t, filepath.Join(configDir("rbac"), "role.yaml"))[0].Object["rules"]; !reflect.DeepEqual(role.Object["rules"], want) {
		t.Errorf("installed manager rules differ from config/rbac/role.yaml:\n got %v\nwant %v", role.Object["rules"], want)
	}

	// The installed CRD serves MedOpsAPIs, with the schema's defaults.
	sample := readObjects(t, configDir("samples", "medops_v1alpha1_medopsapi_minimal.yaml"))[0]
	sample.SetNamespace("default")
	created, err := dyn.Resource(medopsGVR).Namespace("default").Create(ctx, &sample, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("create the minimal sample through the installed CRD: %v", err)
	}
	if img, _, _ := unstructured.NestedString(created.Object, "spec", "image"); img == "" {
		t.Errorf("created MedOpsAPI has no defaulted spec.image: %v", created.Object["spec"])
	}

	// The first MedOpsAPI that NOTES.txt tells the user to apply is accepted.
	first := notesExample(t, string(installOut))
	if first.GetKind() != "MedOpsAPI" {
		t.Fatalf("NOTES.txt example is a %q, want a MedOpsAPI", first.GetKind())
	}
	if _, err := dyn.Resource(medopsGVR).Namespace("default").Create(ctx, &first, metav1.CreateOptions{}); err != nil {
		t.Errorf("the MedOpsAPI from NOTES.txt is refused: %v", err)
	}

	// Both Deployments' pods pass the restricted Pod Security Standard, as
	// enforced by the apiserver's PodSecurity admission.
	checkRestrictedPods(ctx, t, dyn, map[string]unstructured.Unstructured{"chart": *dep, "kustomize": kustomizeDeployment(t)})

	// Upgrade with a CRD that gained a printer column, and a new image tag.
	changed := copyChartWithExtraColumn(t)
	h.mustRun(t, "upgrade", "medops-operator", changed, "--namespace", "medops-system", "--set", "image.tag=v0.2.0")
	crd, err = dyn.Resource(crdGVR).Get(ctx, "medopsapis.medops.io", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if !hasPrinterColumn(crd, "Image") {
		t.Error("helm upgrade did not update the CRD: the new Image printer column is missing on the apiserver")
	}
	dep, err = dyn.Resource(deploymentGVR).Namespace("medops-system").Get(ctx, "medops-operator", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if img := container(t, *dep)["image"]; img != "ghcr.io/medops/medops-operator:v0.2.0" {
		t.Errorf("upgraded image = %v, want ...:v0.2.0", img)
	}

	// Uninstall keeps the CRD and with it the user's MedOpsAPIs.
	h.mustRun(t, "uninstall", "medops-operator", "--namespace", "medops-system")
	if _, err := dyn.Resource(deploymentGVR).Namespace("medops-system").Get(ctx, "medops-operator", metav1.GetOptions{}); err == nil {
		t.Error("the Deployment survived helm uninstall")
	}
	if _, err := dyn.Resource(crdGVR).Get(ctx, "medopsapis.medops.io", metav1.GetOptions{}); err != nil {
		t.Errorf("the CRD was not kept on uninstall: %v", err)
	}
	if _, err := dyn.Resource(medopsGVR).Namespace("default").Get(ctx, sample.GetName(), metav1.GetOptions{}); err != nil {
		t.Errorf("the user's MedOpsAPI was lost on uninstall: %v", err)
	}

	// The kustomize install is valid for the same apiserver: a server-side
	// dry-run apply of every object checks it against the real schemas.
	for _, o := range buildObjects(t, configDir("default")) {
		gvr := gvrFor(t, o)
		data, err := yaml.Marshal(o.Object)
		if err != nil {
			t.Fatal(err)
		}
		jsonData, err := yaml.YAMLToJSON(data)
		if err != nil {
			t.Fatal(err)
		}
		force := true
		_, err = dyn.Resource(gvr).Namespace(o.GetNamespace()).Patch(ctx, o.GetName(), types.ApplyPatchType, jsonData,
			metav1.PatchOptions{FieldManager: "medops-test", Force: &force, DryRun: []string{metav1.DryRunAll}})
		if err != nil {
			t.Errorf("dry-run apply of config/default %s/%s: %v", o.GetKind(), o.GetName(), err)
		}
	}
}

// helmOnEnvtest starts a control plane serving the CRDs in crdDirs and
// returns helm pointed at it and a client to read back what helm installed.
func helmOnEnvtest(t *testing.T, crdDirs ...string) (*helm, dynamic.Interface) {
	t.Helper()
	env, cfg := testenv.StartForTest(t, crdDirs...)
	h := newHelm(t)
	h.kubeconfig = writeKubeconfig(t, env, cfg)
	dyn, err := dynamic.NewForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return h, dyn
}

// writeKubeconfig gives helm an admin identity on the envtest apiserver.
func writeKubeconfig(t *testing.T, env *envtest.Environment, cfg *rest.Config) string {
	t.Helper()
	user, err := env.AddUser(envtest.User{Name: "helm-admin", Groups: []string{"system:masters"}}, cfg)
	if err != nil {
		t.Fatalf("add envtest user: %v", err)
	}
	data, err := user.KubeConfig()
	if err != nil {
		t.Fatalf("kubeconfig: %v", err)
	}
	path := filepath.Join(t.TempDir(), "kubeconfig")
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

func waitEstablished(ctx context.Context, t *testing.T, dyn dynamic.Interface) *unstructured.Unstructured {
	t.Helper()
	var crd *unstructured.Unstructured
	err := wait.PollUntilContextTimeout(ctx, 100*time.Millisecond, 30*time.Second, true, func(ctx context.Context) (bool, error) {
		var err error
		crd, err = dyn.Resource(crdGVR).Get(ctx, "medopsapis.medops.io", metav1.GetOptions{})
		if err != nil {
			return false, nil
		}
		conds, _, _ := unstructured.NestedSlice(crd.Object, "status", "conditions")
		for _, c := range conds {
			c := c.(map[string]any)
			if c["type"] == "Established" && c["status"] == "True" {
				return true, nil
			}
		}
		return false, nil
	})
	if err != nil {
		t.Fatalf("the installed CRD never became Established: %v", err)
	}
	return crd
}

func hasPrinterColumn(crd *unstructured.Unstructured, name string) bool {
	versions, _, _ := unstructured.NestedSlice(crd.Object, "spec", "versions")
	for _, v := range versions {
		cols, _, _ := unstructured.NestedSlice(v.(map[string]any), "additionalPrinterColumns")
		for _, c := range cols {
			if c.(map[string]any)["name"] == name {
				return true
			}
		}
	}
	return false
}

// copyChartWithExtraColumn copies the chart to a temporary folder and adds an
// Image printer column to its CRD: a stand-in for the next release's API.
func copyChartWithExtraColumn(t *testing.T) string {
	t.Helper()
	dst := filepath.Join(t.TempDir(), "medops-operator")
	if err := os.CopyFS(dst, os.DirFS(chartDir())); err != nil {
		t.Fatalf("copy chart: %v", err)
	}
	path := filepath.Join(dst, "files", "crds", "medops.io_medopsapis.yaml")
	crd := readObjects(t, path)[0]
	versions, _, _ := unstructured.NestedSlice(crd.Object, "spec", "versions")
	for i, v := range versions {
		v := v.(map[string]any)
		cols, _ := v["additionalPrinterColumns"].([]any)
		v["additionalPrinterColumns"] = append(cols, map[string]any{"name": "Image", "type": "string", "jsonPath": ".spec.image", "priority": int64(1)})
		versions[i] = v
	}
	if err := unstructured.SetNestedSlice(crd.Object, versions, "spec", "versions"); err != nil {
		t.Fatal(err)
	}
	data, err := yaml.Marshal(crd.Object)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, data, 0o644); err != nil {
		t.Fatal(err)
	}
	return dst
}

// gvrFor maps the kinds config/default holds to their resources.
func gvrFor(t *testing.T, o unstructured.Unstructured) schema.GroupVersionResource {
	t.Helper()
	gv, err := schema.ParseGroupVersion(o.GetAPIVersion())
	if err != nil {
		t.Fatal(err)
	}
	resource := strings.ToLower(o.GetKind()) + "s"
	if o.GetKind() == "CustomResourceDefinition" {
		resource = "customresourcedefinitions"
	}
	return gv.WithResource(resource)
}

// notesExample extracts the heredoc YAML (between <<'YAML' and YAML) that
// the chart's NOTES.txt prints after helm install.
func notesExample(t *testing.T, out string) unstructured.Unstructured {
	t.Helper()
	var doc []string
	in := false
	for _, line := range strings.Split(out, "\n") {
		switch {
		case strings.Contains(line, "<<'YAML'"):
			in = true
		case in && strings.TrimSpace(line) == "YAML":
			objs, err := Split([]byte(strings.Join(doc, "\n")))
			if err != nil || len(objs) != 1 {
				t.Fatalf("NOTES.txt example: %d objects, %v:\n%s", len(objs), err, strings.Join(doc, "\n"))
			}
			return objs[0]
		case in:
			doc = append(doc, strings.TrimPrefix(line, "  "))
		}
	}
	t.Fatalf("helm install printed no example MedOpsAPI in its notes:\n%s", out)
	return unstructured.Unstructured{}
}

// TestHelmCRDPolicy: crds.keep decides whether helm uninstall leaves the
// CRD (and so the users' MedOpsAPIs) in place.
func TestHelmCRDPolicy(t *testing.T) {
	h := newHelm(t)
	for _, keep := range []bool{true, false} {
		objs, err := Split(h.mustRun(t, "template", "medops-operator", chartDir(), "--set", "crds.keep="+strconv.FormatBool(keep)))
		if err != nil {
			t.Fatal(err)
		}
		found := false
		for _, o := range objs {
			if o.GetKind() != "CustomResourceDefinition" {
				continue
			}
			found = true
			if got := o.GetAnnotations()["helm.sh/resource-policy"] == "keep"; got != keep {
				t.Errorf("crds.keep=%v: CRD annotations %v", keep, o.GetAnnotations())
			}
		}
		if !found {
			t.Errorf("crds.keep=%v: no CRD rendered", keep)
		}
	}
}

func kustomizeDeployment(t *testing.T) unstructured.Unstructured {
	t.Helper()
	for _, o := range buildObjects(t, configDir("default")) {
		if o.GetKind() == "Deployment" {
			return o
		}
	}
	t.Fatal("config/default has no Deployment")
	return unstructured.Unstructured{}
}

// checkRestrictedPods creates (dry run) a Pod from each Deployment's
// template in a namespace that enforces the restricted Pod Security
// Standard; a privileged pod is the control that the policy is enforced.
func checkRestrictedPods(ctx context.Context, t *testing.T, dyn dynamic.Interface, deps map[string]unstructured.Unstructured) {
	t.Helper()
	nsGVR := schema.GroupVersionResource{Version: "v1", Resource: "namespaces"}
	podGVR := schema.GroupVersionResource{Version: "v1", Resource: "pods"}
	ns := unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "v1", "kind": "Namespace",
		"metadata": map[string]any{"name": "pss-restricted", "labels": map[string]any{
			"pod-security.kubernetes.io/enforce": "restricted", "pod-security.kubernetes.io/enforce-version": "latest"}},
	}}
	if _, err := dyn.Resource(nsGVR).Create(ctx, &ns, metav1.CreateOptions{}); err != nil {
		t.Fatalf("create restricted namespace: %v", err)
	}
	pod := func(name string, spec map[string]any) *unstructured.Unstructured {
		return &unstructured.Unstructured{Object: map[string]any{
			"apiVersion": "v1", "kind": "Pod",
			"metadata": map[string]any{"name": name, "namespace": "pss-restricted"},
			"spec":     spec,
		}}
	}
	dryRun := metav1.CreateOptions{DryRun: []string{metav1.DryRunAll}}
	privileged := pod("privileged", map[string]any{"containers": []any{map[string]any{
		"name": "c", "image": "busybox", "securityContext": map[string]any{"privileged": true}}}})
	if _, err := dyn.Resource(podGVR).Namespace("pss-restricted").Create(ctx, privileged, dryRun); err == nil {
		t.Fatal("a privileged pod was admitted: PodSecurity admission is not enforcing, so this check proves nothing")
	}
	for name, dep := range deps {
		spec, _, _ := unstructured.NestedMap(dep.Object, "spec", "template", "spec")
		if _, err := dyn.Resource(podGVR).Namespace("pss-restricted").Create(ctx, pod("operator-"+name, spec), dryRun); err != nil {
			t.Errorf("the %s operator pod is refused under the restricted Pod Security Standard: %v", name, err)
		}
	}
}
