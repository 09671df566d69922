package manifests

import (
	"bytes"
	"flag"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"sort"
	"strings"
	"testing"

	apiresource "k8s.io/apimachinery/pkg/api/resource"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/yaml"

	"github.com/medops/medops/internal/golden"
	"github.com/medops/medops/internal/repo"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata/")

func configDir(parts ...string) string {
	return filepath.Join(append([]string{repo.Root(), "config"}, parts...)...)
}

// kindNames lists "Kind/name" (or "Kind/namespace/name") of objects, sorted.
func kindNames(objs []unstructured.Unstructured) []string {
	var out []string
	for _, o := range objs {
		id := o.GetKind() + "/" + o.GetName()
		if ns := o.GetNamespace(); ns != "" {
			id = o.GetKind() + "/" + ns + "/" + o.GetName()
		}
		out = append(out, id)
	}
	sort.Strings(out)
	return out
}

func buildObjects(t *testing.T, dir string, images ...Image) []unstructured.Unstructured {
	t.Helper()
	out, err := Build(dir, images...)
	if err != nil {
		t.Fatalf("build %s: %v", dir, err)
	}
	objs, err := Split(out)
	if err != nil {
		t.Fatalf("parse output of %s: %v", dir, err)
	}
	return objs
}

// TestEveryKustomizationBuilds builds each kustomization under config/ the
// way `kubectl apply -k` would, and checks which kinds each one yields. A new
// folder with a kustomization must still build; the ones users apply
// directly have their content pinned.
func TestEveryKustomizationBuilds(t *testing.T) {
	// want: the kinds each folder must yield (every one at least once, no others).
	want := map[string][]string{
		"crd":        {"CustomResourceDefinition"},
		"rbac":       {"ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding", "ServiceAccount"},
		"manager":    {"Deployment", "Namespace"},
		"default":    {"ClusterRole", "ClusterRoleBinding", "CustomResourceDefinition", "Deployment", "Namespace", "Role", "RoleBinding", "Service", "ServiceAccount"},
		"samples":    {"MedOpsAPI"},
		"prometheus": {"ServiceMonitor"},
	}
	var dirs []string
	err := filepath.WalkDir(configDir(), func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if !d.IsDir() && d.Name() == "kustomization.yaml" {
			rel, _ := filepath.Rel(configDir(), filepath.Dir(path))
			dirs = append(dirs, filepath.ToSlash(rel))
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	for _, must := range []string{"crd", "rbac", "manager", "default"} {
		if !slices.Contains(dirs, must) {
			t.Errorf("config/%s has no kustomization.yaml", must)
		}
	}
	for _, dir := range dirs {
		t.Run(dir, func(t *testing.T) {
			objs := buildObjects(t, configDir(dir))
			if len(objs) == 0 {
				t.Fatalf("config/%s builds to nothing", dir)
			}
			kinds := map[string]bool{}
			for _, o := range objs {
				kinds[o.GetKind()] = true
				if o.GetAPIVersion() == "" || o.GetName() == "" {
					t.Errorf("object without apiVersion or name: %v", o.Object)
				}
			}
			var got []string
			for k := range kinds {
				got = append(got, k)
			}
			sort.Strings(got)
			if w, ok := want[dir]; ok && !reflect.DeepEqual(got, w) {
				t.Errorf("config/%s yields kinds %v, want %v", dir, got, w)
			}
		})
	}
}

// TestDefaultInstall checks what `kubectl apply -k config/default` (and
// dist/install.yaml) installs: everything namespaced lands in medops-system,
// names carry the prefix, references between objects resolve after the
// prefix, the CRD is the generated one, the Deployment is hardened, and RBAC
// grants nothing with wildcards.
func TestDefaultInstall(t *testing.T) {
	objs := buildObjects(t, configDir("default"))
	byID := map[string]unstructured.Unstructured{}
	for _, o := range objs {
		byID[o.GetKind()+"/"+o.GetName()] = o
	}

	t.Run("namespace and prefix", func(t *testing.T) {
		clusterScoped := map[string]bool{"Namespace": true, "CustomResourceDefinition": true, "ClusterRole": true, "ClusterRoleBinding": true}
		for _, o := range objs {
			if clusterScoped[o.GetKind()] {
				if o.GetNamespace() != "" {
					t.Errorf("%s/%s is cluster-scoped but has namespace %q", o.GetKind(), o.GetName(), o.GetNamespace())
				}
			} else if o.GetNamespace() != "medops-system" {
				t.Errorf("%s/%s is in namespace %q, want medops-system", o.GetKind(), o.GetName(), o.GetNamespace())
			}
			if o.GetKind() != "CustomResourceDefinition" && !strings.HasPrefix(o.GetName(), "medops-") {
				t.Errorf("%s/%s lacks the medops- name prefix", o.GetKind(), o.GetName())
			}
		}
		if _, ok := byID["Namespace/medops-system"]; !ok {
			t.Errorf("no Namespace medops-system in %v", kindNames(objs))
		}
		ns := byID["Namespace/medops-system"]
		if ns.GetLabels()["pod-security.kubernetes.io/enforce"] != "restricted" {
			t.Errorf("namespace labels %v: want pod-security enforce=restricted", ns.GetLabels())
		}
		// Namespace and CRD first, so `kubectl apply -f dist/install.yaml` works in one go.
		if objs[0].GetKind() != "Namespace" || objs[1].GetKind() != "CustomResourceDefinition" {
			t.Errorf("output starts with %s, %s; want Namespace, CustomResourceDefinition", objs[0].GetKind(), objs[1].GetKind())
		}
	})

	t.Run("crd is the generated one", func(t *testing.T) {
		crd, ok := byID["CustomResourceDefinition/medopsapis.medops.io"]
		if !ok {
			t.Fatalf("no CRD medopsapis.medops.io in %v", kindNames(objs))
		}
		base := readObjects(t, filepath.Join(configDir("crd", "bases"), "medops.io_medopsapis.yaml"))
		if !reflect.DeepEqual(crd.Object["spec"], base[0].Object["spec"]) {
			t.Errorf("the CRD spec in config/default differs from config/crd/bases")
		}
		if got := crd.GetLabels()["app.kubernetes.io/part-of"]; got != "medops" {
			t.Errorf("CRD label part-of = %q, want medops", got)
		}
	})

	t.Run("deployment", func(t *testing.T) {
		dep, ok := byID["Deployment/medops-controller-manager"]
		if !ok {
			t.Fatalf("no Deployment medops-controller-manager in %v", kindNames(objs))
		}
		checkManagerDeployment(t, dep, "ghcr.io/medops/medops-operator:dev", "medops-controller-manager")
		if args := argsOf(container(t, dep)); !slices.Contains(args, "--leader-elect") {
			t.Errorf("args %v lack --leader-elect", args)
		}
	})

	t.Run("references resolve", func(t *testing.T) {
		for _, o := range objs {
			if o.GetKind() != "RoleBinding" && o.GetKind() != "ClusterRoleBinding" {
				continue
			}
			refKind, _, _ := unstructured.NestedString(o.Object, "roleRef", "kind")
			refName, _, _ := unstructured.NestedString(o.Object, "roleRef", "name")
			if _, ok := byID[refKind+"/"+refName]; !ok {
				t.Errorf("%s/%s refers to missing %s/%s", o.GetKind(), o.GetName(), refKind, refName)
			}
			subjects, _, _ := unstructured.NestedSlice(o.Object, "subjects")
			for _, s := range subjects {
				s := s.(map[string]any)
				if s["kind"] != "ServiceAccount" {
					continue
				}
				if _, ok := byID["ServiceAccount/"+s["name"].(string)]; !ok || s["namespace"] != "medops-system" {
					t.Errorf("%s/%s binds missing ServiceAccount %v/%v", o.GetKind(), o.GetName(), s["namespace"], s["name"])
				}
			}
		}
		svc, ok := byID["Service/medops-controller-manager-metrics-service"]
		if !ok {
			t.Fatalf("no metrics Service in %v", kindNames(objs))
		}
		checkMetricsService(t, svc, byID["Deployment/medops-controller-manager"])
	})

	t.Run("rbac", func(t *testing.T) {
		checkLeastPrivilege(t, objs)
		generated := readObjects(t, filepath.Join(configDir("rbac"), "role.yaml"))
		role := byID["ClusterRole/medops-manager-role"]
		if !reflect.DeepEqual(role.Object["rules"], generated[0].Object["rules"]) {
			t.Errorf("manager ClusterRole rules differ from the generated config/rbac/role.yaml")
		}
		auth := byID["ClusterRole/medops-metrics-auth-role"]
		want := []any{
			map[string]any{"apiGroups": []any{"authentication.k8s.io"}, "resources": []any{"tokenreviews"}, "verbs": []any{"create"}},
			map[string]any{"apiGroups": []any{"authorization.k8s.io"}, "resources": []any{"subjectaccessreviews"}, "verbs": []any{"create"}},
		}
		if !reflect.DeepEqual(auth.Object["rules"], want) {
			t.Errorf("metrics auth rules = %v, want exactly tokenreviews and subjectaccessreviews create", auth.Object["rules"])
		}
	})

	t.Run("golden", func(t *testing.T) {
		// The CRD is compared with config/crd/bases above; leaving it out of
		// the golden file keeps API changes from churning it.
		var kept []unstructured.Unstructured
		for _, o := range objs {
			if o.GetKind() != "CustomResourceDefinition" {
				kept = append(kept, o)
			}
		}
		compareGolden(t, "install.golden.yaml", marshalAll(t, kept))
	})
}

// TestBuildSetsImage checks the image override `make build-installer
// IMG_OPERATOR=...` relies on, including registry ports and digests.
func TestBuildSetsImage(t *testing.T) {
	for _, ref := range []string{
		"registry.local:5000/medops/operator:v1.2.3",
		"ghcr.io/medops/medops-operator@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
		"pi.local/medops-operator",
	} {
		t.Run(ref, func(t *testing.T) {
			objs := buildObjects(t, configDir("manager"), Image{Name: "ghcr.io/medops/medops-operator", Ref: ref})
			for _, o := range objs {
				if o.GetKind() != "Deployment" {
					continue
				}
				containers, _, _ := unstructured.NestedSlice(o.Object, "spec", "template", "spec", "containers")
				got := containers[0].(map[string]any)["image"]
				want := ref
				if !strings.ContainsAny(ref[strings.LastIndex(ref, "/"):], ":@") {
					want = ref + ":dev" // kustomize keeps the old tag when the new reference has none
				}
				if got != want {
					t.Errorf("image = %v, want %s", got, want)
				}
				return
			}
			t.Fatal("no Deployment in config/manager")
		})
	}
}

func TestParseImage(t *testing.T) {
	tests := []struct {
		in      string
		want    Image
		wantErr bool
	}{
		{in: "ghcr.io/medops/medops-operator=reg:5000/op:v1", want: Image{Name: "ghcr.io/medops/medops-operator", Ref: "reg:5000/op:v1"}},
		{in: "controller", wantErr: true},
		{in: "=ref", wantErr: true},
		{in: "name=", wantErr: true},
	}
	for _, tt := range tests {
		got, err := ParseImage(tt.in)
		if (err != nil) != tt.wantErr || got != tt.want {
			t.Errorf("ParseImage(%q) = %+v, %v; want %+v, error %v", tt.in, got, err, tt.want, tt.wantErr)
		}
	}
}

// checkManagerDeployment checks the operator Deployment as built by
// kustomize or rendered by the chart: image, flags, probes, a pod that
// passes the restricted Pod Security Standard, Pi-sized resources.
func checkManagerDeployment(t *testing.T, dep unstructured.Unstructured, wantImage, wantSA string) {
	t.Helper()
	spec, _, _ := unstructured.NestedMap(dep.Object, "spec", "template", "spec")
	if spec["serviceAccountName"] != wantSA {
		t.Errorf("serviceAccountName = %v, want %s", spec["serviceAccountName"], wantSA)
	}
	podSC, _ := spec["securityContext"].(map[string]any)
	if podSC["runAsNonRoot"] != true {
		t.Errorf("pod securityContext %v: want runAsNonRoot", podSC)
	}
	if sp, _ := podSC["seccompProfile"].(map[string]any); sp["type"] != "RuntimeDefault" {
		t.Errorf("pod seccompProfile = %v, want RuntimeDefault", podSC["seccompProfile"])
	}
	containers, _ := spec["containers"].([]any)
	if len(containers) != 1 {
		t.Fatalf("%d containers, want 1", len(containers))
	}
	c := containers[0].(map[string]any)
	if c["image"] != wantImage {
		t.Errorf("image = %v, want %s", c["image"], wantImage)
	}
	args := map[string]bool{}
	for _, a := range c["args"].([]any) {
		args[a.(string)] = true
	}
	for _, a := range []string{"--metrics-bind-address=:8443", "--health-probe-bind-address=:8081"} {
		if !args[a] {
			t.Errorf("args %v lack %s", c["args"], a)
		}
	}
	sc, _ := c["securityContext"].(map[string]any)
	if sc["allowPrivilegeEscalation"] != false || sc["readOnlyRootFilesystem"] != true {
		t.Errorf("container securityContext %v: want no privilege escalation and a read-only root", sc)
	}
	if caps, _ := sc["capabilities"].(map[string]any); !reflect.DeepEqual(caps["drop"], []any{"ALL"}) {
		t.Errorf("capabilities %v: want drop [ALL]", sc["capabilities"])
	}
	ports := map[string]int64{}
	for _, p := range c["ports"].([]any) {
		p := p.(map[string]any)
		ports[p["name"].(string)] = toInt(p["containerPort"])
	}
	for probe, path := range map[string]string{"livenessProbe": "/healthz", "readinessProbe": "/readyz"} {
		get, _, _ := unstructured.NestedMap(c, probe, "httpGet")
		port := get["port"]
		if name, ok := port.(string); ok {
			port = ports[name]
		}
		if get["path"] != path || toInt(port) != 8081 {
			t.Errorf("%s = %v, want GET %s on 8081", probe, get, path)
		}
	}
	if ports["https-metrics"] != 8443 {
		t.Errorf("ports %v: want https-metrics 8443", ports)
	}
	res, _ := c["resources"].(map[string]any)
	req, _ := res["requests"].(map[string]any)
	lim, _ := res["limits"].(map[string]any)
	if req["cpu"] == nil || req["memory"] == nil || lim["memory"] == nil {
		t.Errorf("resources %v: want cpu and memory requests and a memory limit", res)
	}
	// A Pi's SD card is small: without ephemeral-storage the kubelet cannot
	// evict the operator before its logs and /tmp fill the node's disk.
	if req["ephemeral-storage"] == nil || lim["ephemeral-storage"] == nil {
		t.Errorf("resources %v: want ephemeral-storage requests and limits", res)
	} else {
		limit := apiresource.MustParse(fmt.Sprint(lim["ephemeral-storage"]))
		for _, v := range spec["volumes"].([]any) {
			size, ok, _ := unstructured.NestedString(v.(map[string]any), "emptyDir", "sizeLimit")
			if ok && limit.Cmp(apiresource.MustParse(size)) <= 0 {
				t.Errorf("ephemeral-storage limit %s does not exceed emptyDir %v's sizeLimit %s", limit.String(), v.(map[string]any)["name"], size)
			}
		}
	}
}

func checkMetricsService(t *testing.T, svc, dep unstructured.Unstructured) {
	t.Helper()
	sel, _, _ := unstructured.NestedStringMap(svc.Object, "spec", "selector")
	podLabels, _, _ := unstructured.NestedStringMap(dep.Object, "spec", "template", "metadata", "labels")
	if len(sel) == 0 {
		t.Errorf("metrics Service has no selector")
	}
	for k, v := range sel {
		if podLabels[k] != v {
			t.Errorf("metrics Service selects %s=%s, which the operator pods (%v) lack", k, v, podLabels)
		}
	}
	ports, _, _ := unstructured.NestedSlice(svc.Object, "spec", "ports")
	if len(ports) != 1 || toInt(ports[0].(map[string]any)["port"]) != 8443 {
		t.Errorf("metrics Service ports %v, want 8443", ports)
	}
}

// checkLeastPrivilege refuses wildcards in any RBAC rule: each permission
// the operator or its users get is named.
func checkLeastPrivilege(t *testing.T, objs []unstructured.Unstructured) {
	t.Helper()
	n := 0
	for _, o := range objs {
		if o.GetKind() != "Role" && o.GetKind() != "ClusterRole" {
			continue
		}
		n++
		rules, _, _ := unstructured.NestedSlice(o.Object, "rules")
		if len(rules) == 0 {
			t.Errorf("%s/%s has no rules", o.GetKind(), o.GetName())
		}
		for _, r := range rules {
			for _, field := range []string{"verbs", "resources", "apiGroups", "nonResourceURLs", "resourceNames"} {
				vals, _, _ := unstructured.NestedStringSlice(r.(map[string]any), field)
				for _, v := range vals {
					if strings.Contains(v, "*") {
						t.Errorf("%s/%s grants wildcard %s %q", o.GetKind(), o.GetName(), field, v)
					}
				}
			}
		}
	}
	if n == 0 {
		t.Error("no Roles or ClusterRoles found")
	}
}

func toInt(v any) int64 {
	switch n := v.(type) {
	case int64:
		return n
	case int:
		return int64(n)
	case float64:
		return int64(n)
	}
	return -1
}

func readObjects(t *testing.T, path string) []unstructured.Unstructured {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	objs, err := Split(data)
	if err != nil || len(objs) == 0 {
		t.Fatalf("parse %s: %d objects, %v", path, len(objs), err)
	}
	return objs
}

func marshalAll(t *testing.T, objs []unstructured.Unstructured) []byte {
	t.Helper()
	var buf bytes.Buffer
	for _, o := range objs {
		data, err := yaml.Marshal(o.Object)
		if err != nil {
			t.Fatal(err)
		}
		buf.WriteString("---\n")
		buf.Write(data)
	}
	return buf.Bytes()
}

// compareGolden compares got with testdata/name; `go test -update` rewrites it.
func compareGolden(t *testing.T, name string, got []byte) {
	t.Helper()
	golden.Compare(t, filepath.Join("testdata", name), got, *update)
}
