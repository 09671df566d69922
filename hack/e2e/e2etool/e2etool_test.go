package main

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/yaml"
)

func ingress(ann map[string]string, pathType networkingv1.PathType, path string) *networkingv1.Ingress {
	return &networkingv1.Ingress{
		ObjectMeta: metav1.ObjectMeta{Name: "x", Namespace: "ns", Annotations: ann},
		Spec: networkingv1.IngressSpec{Rules: []networkingv1.IngressRule{{
			Host: "medops.example.test",
			IngressRuleValue: networkingv1.IngressRuleValue{HTTP: &networkingv1.HTTPIngressRuleValue{
				Paths: []networkingv1.HTTPIngressPath{{
					Path: path, PathType: &pathType,
					Backend: networkingv1.IngressBackend{Service: &networkingv1.IngressServiceBackend{
						Name: "x", Port: networkingv1.ServiceBackendPort{Name: "http"},
					}},
				}},
			}},
		}}},
	}
}

func TestRenderNginxConf(t *testing.T) {
	opts := nginxOptions{Listen: "127.0.0.1:1234", Backend: "127.0.0.1:5678", Prefix: "/tmp/p", JSONErrors: true}
	tests := []struct {
		name    string
		ing     *networkingv1.Ingress
		want    []string
		wantErr string
	}{
		{
			name: "annotations become directives",
			ing: ingress(map[string]string{
				annBodySize: "2m", annReadTimeout: "30", annLimitRPS: "10",
			}, networkingv1.PathTypePrefix, "/"),
			want: []string{
				"server_name medops.example.test;", "location / {", "client_max_body_size 2m;",
				"proxy_read_timeout 30s;", "limit_req zone=rps burst=50 nodelay;", "rate=10r/s",
				"proxy_pass http://127.0.0.1:5678;", "listen 127.0.0.1:1234 default_server;",
				"error_page 413 @json413;",
			},
		},
		{
			name: "exact path and ingress-nginx default body size",
			ing:  ingress(nil, networkingv1.PathTypeExact, "/api"),
			want: []string{"location = /api {", "client_max_body_size 1m;"},
		},
		{
			name:    "kubernetes quantity is not an nginx size",
			ing:     ingress(map[string]string{annBodySize: "1Mi"}, networkingv1.PathTypePrefix, "/"),
			wantErr: "is not an nginx size",
		},
		{
			name:    "timeout must be seconds",
			ing:     ingress(map[string]string{annReadTimeout: "30s"}, networkingv1.PathTypePrefix, "/"),
			wantErr: "positive number of seconds",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, _, err := renderNginxConf(tt.ing, opts)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("error = %v, want it to contain %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			for _, w := range tt.want {
				if !strings.Contains(got, w) {
					t.Errorf("config lacks %q:\n%s", w, got)
				}
			}
		})
	}
}

func TestRewriteWorkloadConfig(t *testing.T) {
	tests := []struct {
		name      string
		in        string
		want      map[string]any // top-level or dotted keys
		wantErr   string
		wantNoKey string
	}{
		{
			name: "paths rewritten, rest kept",
			in: "listen: 0.0.0.0:8080\ndataDir: /data\nauth:\n  tokenFile: /var/run/medops/token\n" +
				"cache:\n  size: 32Mi\n  shards: 8\n",
			want: map[string]any{"listen": "127.0.0.1:9", "dataDir": "/tmp/d", "auth.tokenFile": "/tmp/t", "cache.shards": float64(8)},
		},
		{
			name:      "no token file configured stays without one",
			in:        "listen: 0.0.0.0:8080\nauth:\n  disabled: true\n",
			want:      map[string]any{"auth.disabled": true},
			wantNoKey: "tokenFile",
		},
		{
			name:    "unknown field refused",
			in:      "listen: 0.0.0.0:8080\ncache:\n  sise: 32Mi\n",
			wantErr: "does not match the WorkloadConfig schema",
		},
		{
			name:    "invalid value refused",
			in:      "cache:\n  shards: 3\n",
			wantErr: "cache.shards",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			out, err := rewriteWorkloadConfig([]byte(tt.in), "127.0.0.1:9", "/tmp/d", "/tmp/t")
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("error = %v, want it to contain %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			var m map[string]any
			if err := yaml.Unmarshal(out, &m); err != nil {
				t.Fatal(err)
			}
			for k, want := range tt.want {
				var got any = m
				for _, part := range strings.Split(k, ".") {
					got = got.(map[string]any)[part]
				}
				if got != want {
					t.Errorf("%s = %v, want %v", k, got, want)
				}
			}
			if tt.wantNoKey != "" && strings.Contains(string(out), tt.wantNoKey) {
				t.Errorf("output has %s:\n%s", tt.wantNoKey, out)
			}
		})
	}
}

func TestUpstreamCountsCallsButNotProbes(t *testing.T) {
	u := &upstream{}
	srv := httptest.NewServer(u.routes())
	defer srv.Close()
	get := func(path string) map[string]any {
		t.Helper()
		resp, err := http.Get(srv.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		var m map[string]any
		if err := json.Unmarshal(b, &m); err != nil {
			t.Fatalf("%s: %v: %s", path, err, b)
		}
		return m
	}
	get("/genes/BRCA2?x=1")
	if m := get("/genes/TP53"); m["call"] != float64(2) || m["path"] != "/genes/TP53" {
		t.Errorf("second call = %v", m)
	}
	if m := get("/__hits"); m["hits"] != float64(2) {
		t.Errorf("hits = %v, want 2", m["hits"])
	}
}

func TestJSONField(t *testing.T) {
	tests := []struct {
		in, field, want string
	}{
		{`{"id":"t1","version":3}`, "id", "t1"},
		{`{"id":"t1","version":3}`, "version", "3"},
		{`{"id":"t1"}`, "missing", ""},
		{`<html>413</html>`, "id", ""},
		{`{"error":{"code":"too_large","message":"body too large"}}`, "--error", "yes"},
		{`{"error":{"code":"too_large"}}`, "--error", "no: not an error envelope: {\"error\":{\"code\":\"too_large\"}}"},
		{`<html>413 Request Entity Too Large</html>`, "--error", "no: not JSON: <html>413 Request Entity Too Large</html>"},
	}
	for _, tt := range tests {
		if got := jsonField([]byte(tt.in), tt.field); got != tt.want {
			t.Errorf("jsonField(%s, %s) = %q, want %q", tt.in, tt.field, got, tt.want)
		}
	}
}
