// Package contract holds the end-to-end check of the one-schema promise: the
// configuration file the operator renders into a ConfigMap is exactly one
// that medops-api accepts. It lives apart from both sides because it needs
// both, and neither should import the other.
package contract

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"k8s.io/apimachinery/pkg/api/equality"
	"sigs.k8s.io/yaml"

	"github.com/medops/medops/api/v1alpha1"
	"github.com/medops/medops/internal/pgtest"
	"github.com/medops/medops/internal/repo"
	"github.com/medops/medops/operator/resource"
	"github.com/medops/medops/server/app"
	"github.com/medops/medops/server/config"
)

// samples reads every MedOpsAPI in config/samples.
func samples(t *testing.T) map[string]*v1alpha1.MedOpsAPI {
	t.Helper()
	files, err := filepath.Glob(filepath.Join(repo.Root(), "config", "samples", "*.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]*v1alpha1.MedOpsAPI{}
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		var meta struct {
			Kind string `json:"kind"`
		}
		if err := yaml.Unmarshal(data, &meta); err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		if meta.Kind != "MedOpsAPI" {
			continue // kustomization.yaml
		}
		m := &v1alpha1.MedOpsAPI{}
		if err := yaml.UnmarshalStrict(data, m); err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		out[filepath.Base(f)] = m
	}
	if len(out) < 3 {
		t.Fatalf("found only %d MedOpsAPI samples", len(out))
	}
	return out
}

// TestRenderedConfigLoadsInWorkload renders each sample's ConfigMap the way
// the operator does, writes it where the Deployment's --config argument
// points (under a temporary root), parses that argument with medops-api's
// own flag parser, loads the file, and finally builds the whole app from
// it, with a real PostgreSQL server behind a sample's storage.postgres. With
// the tasks module on, each replica creates a task and every replica reads
// every task back. Any drift between what the operator writes and what the
// workload reads fails here.
func TestRenderedConfigLoadsInWorkload(t *testing.T) {
	for name, m := range samples(t) {
		t.Run(name, func(t *testing.T) {
			d, err := resource.Prepare(m, resource.Inputs{TokenSecretName: resource.TokenSecretName(m)})
			if err != nil {
				t.Fatalf("Prepare: %v", err)
			}
			rendered := d.Config
			cm := resource.BuildConfigMap(d)
			dep := resource.BuildDeployment(d)
			args := dep.Spec.Template.Spec.Containers[0].Args

			root := t.TempDir()
			flags, err := config.ParseFlags("medops-api", args, func(string) string { return "" }, os.Stderr)
			if err != nil {
				t.Fatalf("medops-api refuses the operator's arguments %q: %v", args, err)
			}
			if !strings.HasPrefix(flags.ConfigPath, resource.ConfigDir+"/") {
				t.Fatalf("--config %q is not inside the mounted ConfigMap %s", flags.ConfigPath, resource.ConfigDir)
			}
			key := strings.TrimPrefix(flags.ConfigPath, resource.ConfigDir+"/")
			data, ok := cm.Data[key]
			if !ok {
				t.Fatalf("--config names key %q, the ConfigMap has %v", key, cm.Data)
			}
			flags.ConfigPath = filepath.Join(root, flags.ConfigPath)
			if err := os.MkdirAll(filepath.Dir(flags.ConfigPath), 0o750); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(flags.ConfigPath, []byte(data), 0o600); err != nil {
				t.Fatal(err)
			}

			loaded, err := config.FromFlags(flags)
			if err != nil {
				t.Fatalf("medops-api cannot load the rendered config:\n%s\n%v", data, err)
			}
			if !equality.Semantic.DeepEqual(loaded, rendered) {
				t.Fatalf("the workload reads another config than the operator rendered:\nrendered %+v\nloaded   %+v", rendered, loaded)
			}

			// The paths are the pod's; point them into the temporary root,
			// put there what the mounted Secrets would hold, and start the
			// real app (store, cache, gateway) from the file.
			loaded.DataDir = filepath.Join(root, loaded.DataDir)
			if loaded.Auth.TokenFile != "" {
				loaded.Auth.TokenFile = filepath.Join(root, loaded.Auth.TokenFile)
				writeFile(t, loaded.Auth.TokenFile, token+"\n")
			}
			if sc := loaded.SharedCache; sc != nil && sc.HMACKeyFile != "" {
				if sc.HMACKeyFile != resource.HMACFile {
					t.Fatalf("sharedCache.hmacKeyFile %q is not where the operator mounts the HMAC Secret", sc.HMACKeyFile)
				}
				sc.HMACKeyFile = filepath.Join(root, sc.HMACKeyFile)
				writeFile(t, sc.HMACKeyFile, "0123456789abcdef0123456789abcdef\n")
			}
			if loaded.PostgresDSNFile() != "" {
				// The pod's file is one key of the referenced Secret; here it
				// holds the URL of a real PostgreSQL server, as the uri key
				// of a CloudNativePG app Secret would.
				if loaded.Postgres.DSNFile != resource.PostgresFile || m.Spec.Storage == nil || m.Spec.Storage.Postgres == nil {
					t.Fatalf("postgres.dsnFile %q without storage.postgres, or not where the operator mounts the Secret", loaded.Postgres.DSNFile)
				}
				pg := pgtest.Start(t)
				loaded.Postgres.DSNFile = filepath.Join(root, loaded.Postgres.DSNFile)
				writeFile(t, loaded.Postgres.DSNFile, pg.DSN(pgtest.Database)+"\n")
			}
			// As many apps as the sample asks replicas, when its store allows
			// more than one (a claim's bbolt file is locked by one process).
			n := 1
			if loaded.PostgresDSNFile() != "" && m.Spec.Replicas != nil {
				n = int(*m.Spec.Replicas)
			}
			apps := make([]*app.App, n)
			for i := range apps {
				a, err := app.New(app.Options{Config: loaded})
				if err != nil {
					t.Fatalf("medops-api (replica %d) does not start from the rendered config: %v", i, err)
				}
				t.Cleanup(func() {
					if err := a.Close(); err != nil {
						t.Error(err)
					}
				})
				apps[i] = a
			}
			if !loaded.Modules.TasksEnabled() {
				return
			}
			// Every replica finds the task every other replica created.
			bearer := ""
			if loaded.Auth.TokenFile != "" {
				bearer = token
			}
			ids := make([]string, n)
			for i, a := range apps {
				ids[i] = createTask(t, a, bearer, fmt.Sprintf("contract %s replica %d", name, i))
			}
			for i, a := range apps {
				for j, id := range ids {
					if code := serve(a, http.MethodGet, "/api/v1/tasks/"+id, "", bearer).Code; code != http.StatusOK {
						t.Errorf("replica %d: GET the task replica %d created: %d", i, j, code)
					}
				}
			}
		})
	}
}

const token = "t0ken"

func writeFile(t *testing.T, path, content string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o750); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
}

func serve(a *app.App, method, path, body, bearer string) *httptest.ResponseRecorder {
	req := httptest.NewRequest(method, path, strings.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	if bearer != "" {
		req.Header.Set("Authorization", "Bearer "+bearer)
	}
	rec := httptest.NewRecorder()
	a.Handler().ServeHTTP(rec, req)
	return rec
}

// createTask creates a task through the app's handler and returns its id.
func createTask(t *testing.T, a *app.App, bearer, title string) string {
	t.Helper()
	rec := serve(a, http.MethodPost, "/api/v1/tasks", fmt.Sprintf(`{"title":%q}`, title), bearer)
	if rec.Code != http.StatusCreated {
		t.Fatalf("create a task: %d %s", rec.Code, rec.Body.String())
	}
	var got struct {
		ID string `json:"id"`
	}
	if err := json.Unmarshal(rec.Body.Bytes(), &got); err != nil || got.ID == "" {
		t.Fatalf("create answer %s: %v", rec.Body.String(), err)
	}
	return got.ID
}

// TestIngressPathReachesTheAPI follows a request the way the Ingress sends
// it: for ingress.path /medops the Ingress forwards /medops/api/v1/...
// unchanged, so the config the operator renders must make the real
// medops-api serve the API under that prefix, at the URL status.url
// advertises, while probes and metrics stay at the root.
func TestIngressPathReachesTheAPI(t *testing.T) {
	m := &v1alpha1.MedOpsAPI{}
	m.Name, m.Namespace = "medops", "lab"
	m.Spec.Ingress = &v1alpha1.IngressSpec{Enabled: true, Host: "api.lab.local", Path: "/medops/"}
	d, err := resource.Prepare(m, resource.Inputs{TokenSecretName: resource.TokenSecretName(m)})
	if err != nil {
		t.Fatal(err)
	}
	ing := resource.BuildIngress(d)
	prefix := ing.Spec.Rules[0].HTTP.Paths[0].Path
	statusURL, err := url.Parse(d.MedOpsAPI.Spec.URL())
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := config.Parse([]byte(resource.BuildConfigMap(d).Data[resource.ConfigKey]))
	if err != nil {
		t.Fatalf("medops-api cannot load the rendered config: %v", err)
	}
	root := t.TempDir()
	cfg.DataDir = filepath.Join(root, "data")
	cfg.Auth.TokenFile = filepath.Join(root, "token")
	if err := os.WriteFile(cfg.Auth.TokenFile, []byte("t0ken\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	a, err := app.New(app.Options{Config: cfg})
	if err != nil {
		t.Fatalf("medops-api does not start from the rendered config: %v", err)
	}
	t.Cleanup(func() { _ = a.Close() })
	srv := httptest.NewServer(a.Handler())
	t.Cleanup(srv.Close)

	apiPath := strings.TrimSuffix(statusURL.Path, "/") + app.TasksPrefix
	if !strings.HasPrefix(apiPath, prefix) {
		t.Fatalf("status.url path %s is not under the Ingress path %s", statusURL.Path, prefix)
	}
	tests := []struct {
		path string
		want int
	}{
		{apiPath, http.StatusOK}, // what a user of status.url calls
		{strings.TrimSuffix(statusURL.Path, "/") + "/openapi.json", http.StatusOK}, // the document, next to the API
		{"/healthz", http.StatusOK}, // the kubelet's probes, at the root
		{"/readyz", http.StatusOK},
		{"/metrics", http.StatusOK},
		{app.TasksPrefix, http.StatusNotFound}, // not served twice
	}
	for _, tt := range tests {
		req, err := http.NewRequestWithContext(t.Context(), http.MethodGet, srv.URL+tt.path, nil)
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Authorization", "Bearer t0ken")
		resp, err := srv.Client().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		_ = resp.Body.Close()
		if resp.StatusCode != tt.want {
			t.Errorf("GET %s = %d, want %d", tt.path, resp.StatusCode, tt.want)
		}
	}
}
