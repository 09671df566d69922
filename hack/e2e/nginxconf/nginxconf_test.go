package nginxconf

import (
	"strings"
	"testing"

	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
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
	opts := Options{Listen: "127.0.0.1:1234", Backend: "127.0.0.1:5678", Prefix: "/tmp/p", JSONErrors: true}
	tests := []struct {
		name    string
		ing     *networkingv1.Ingress
		want    []string
		wantErr string
		opts    *Options
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
			name: "endpoints are balanced round robin instead of the backend",
			ing:  ingress(nil, networkingv1.PathTypePrefix, "/"),
			opts: &Options{Listen: "127.0.0.1:1234", Backend: "127.0.0.1:5678", Prefix: "/tmp/p",
				Endpoints: []string{"10.0.0.1:8080", "10.0.0.2:8080"}},
			want: []string{"upstream endpoints {\n    server 10.0.0.1:8080;\n    server 10.0.0.2:8080;\n  }", "proxy_pass http://endpoints;"},
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
		if tt.opts == nil {
			tt.opts = &opts
		}
		t.Run(tt.name, func(t *testing.T) {
			got, _, err := Render(tt.ing, *tt.opts)
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
