package manifests

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"sigs.k8s.io/yaml"

	"github.com/medops/medops/internal/repo"
)

// TestProjectFile: kubebuilder reads PROJECT to scaffold into this tree, so
// it must name this module, the medops.io domain and the MedOpsAPI resource
// as it really is.
func TestProjectFile(t *testing.T) {
	data, err := os.ReadFile(filepath.Join(repo.Root(), "PROJECT"))
	if err != nil {
		t.Fatal(err)
	}
	var p struct {
		Domain      string   `json:"domain"`
		ProjectName string   `json:"projectName"`
		Layout      []string `json:"layout"`
		Repo        string   `json:"repo"`
		Version     string   `json:"version"`
		Resources   []struct {
			Kind       string `json:"kind"`
			Version    string `json:"version"`
			Domain     string `json:"domain"`
			Path       string `json:"path"`
			Controller bool   `json:"controller"`
			API        struct {
				CRDVersion string `json:"crdVersion"`
				Namespaced bool   `json:"namespaced"`
			} `json:"api"`
		} `json:"resources"`
	}
	if err := yaml.UnmarshalStrict(data, &p); err != nil {
		t.Fatalf("PROJECT: %v", err)
	}
	gomod, err := os.ReadFile(filepath.Join(repo.Root(), "go.mod"))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(string(gomod), "module "+p.Repo+"\n") {
		t.Errorf("PROJECT repo %q is not the go.mod module", p.Repo)
	}
	if p.Domain != "medops.io" || p.Version != "3" || len(p.Layout) != 1 || p.Layout[0] != "go.kubebuilder.io/v4" {
		t.Errorf("PROJECT domain %q version %q layout %v; want medops.io, 3, [go.kubebuilder.io/v4]", p.Domain, p.Version, p.Layout)
	}
	if len(p.Resources) != 1 {
		t.Fatalf("PROJECT lists %d resources, want the MedOpsAPI", len(p.Resources))
	}
	r := p.Resources[0]
	if r.Kind != "MedOpsAPI" || r.Version != "v1alpha1" || r.Domain != "medops.io" || !r.Controller || !r.API.Namespaced || r.API.CRDVersion != "v1" {
		t.Errorf("PROJECT resource %+v does not describe the namespaced MedOpsAPI v1alpha1 with a controller", r)
	}
	if _, err := os.Stat(filepath.Join(repo.Root(), strings.TrimPrefix(r.Path, p.Repo+"/"), "medopsapi_types.go")); err != nil {
		t.Errorf("PROJECT resource path %s: %v", r.Path, err)
	}
}
