//go:build e2e

package journey

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	networkingv1 "k8s.io/api/networking/v1"

	"github.com/medops/medops/hack/e2e/cluster"
	"github.com/medops/medops/hack/e2e/nginxconf"
)

// nginx checks the typed ingress-nginx annotations the operator writes
// (proxy-body-size, proxy-read-timeout, limit-rps): Traefik ignores them, so
// a real nginx from Debian is configured from the Ingress the way
// ingress-nginx reads them, in front of the real pods' Service (its
// ClusterIP, which kube-proxy routes).
const (
	nginxName = "medops-nginx"
	nginxHost = "medops-nginx.e2e.test"
)

// renderNginx writes nginx.conf for an Ingress into dir and runs nginx -t.
// With endpoints, nginx balances across them instead of proxying to backend.
func (s *suite) renderNginx(t *testing.T, ingress, dir, listen, backend string, endpoints ...string) string {
	t.Helper()
	var ing networkingv1.Ingress
	s.getJSON(t, ns, "ingress/"+ingress, &ing)
	conf, warnings, err := nginxconf.Render(&ing, nginxconf.Options{
		Listen: listen, Backend: backend, Endpoints: endpoints, Prefix: dir, RunAsRoot: os.Geteuid() == 0, JSONErrors: true,
	})
	if err != nil {
		t.Fatalf("ingress %s: %v", ingress, err)
	}
	for _, w := range warnings {
		t.Logf("ingress %s: %s", ingress, w)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "nginx.conf")
	if err := os.WriteFile(path, []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.CommandContext(s.ctx, s.tools.nginx, "-t", "-q", "-p", dir, "-c", path).CombinedOutput(); err != nil {
		t.Fatalf("nginx -t: %v\n%s\n%s", err, out, conf)
	}
	return conf
}

func (s *suite) nginxChecks(t *testing.T) {
	s.check(t, "medops-gateway: its Ingress annotations are valid nginx settings (2m body for a 1Mi API limit, 60s read timeout, 20 rps)", func(t *testing.T) {
		conf := s.renderNginx(t, "medops-gateway", filepath.Join(s.work, "nginx-gateway"), "127.0.0.1:1", "127.0.0.1:2")
		for _, want := range []string{"client_max_body_size 2m;", "proxy_read_timeout 60s;", "rate=20r/s"} {
			if !strings.Contains(conf, want) {
				t.Errorf("nginx.conf lacks %q", want)
			}
		}
	})
	if !s.check(t, "kubectl apply a MedOpsAPI for amd64 behind an nginx Ingress (1Mi body, 30s read timeout)", func(t *testing.T) {
		if err := s.applyNS(fmt.Sprintf(`apiVersion: medops.io/v1alpha1
kind: MedOpsAPI
metadata:
  name: %s
spec:
  architectures: [amd64]
  ingress:
    enabled: true
    className: nginx
    host: %s
    path: /
    proxyBodySize: 1Mi
    proxyReadTimeout: 30s
`, nginxName, nginxHost)); err != nil {
			t.Fatal(err)
		}
	}) {
		return
	}
	s.waitReady(t, nginxName)
	var backend string
	s.check(t, "nginx: the Ingress backend is a port of the MedOpsAPI's Service", func(t *testing.T) {
		svc := s.jp(t, ns, "ingress/"+nginxName, "{.spec.rules[0].http.paths[0].backend.service.name}")
		pname := s.jp(t, ns, "ingress/"+nginxName, "{.spec.rules[0].http.paths[0].backend.service.port.name}")
		pnum := s.jp(t, ns, "ingress/"+nginxName, "{.spec.rules[0].http.paths[0].backend.service.port.number}")
		sel := fmt.Sprintf("{.spec.ports[?(@.port==%s)].port}", pnum)
		if pname != "" {
			sel = fmt.Sprintf("{.spec.ports[?(@.name==%q)].port}", pname)
		}
		port := s.jp(t, ns, "svc/"+svc, sel)
		eq(t, "backend service", nginxName, svc)
		if port == "" {
			t.Fatalf("service %s has no port %s%s", svc, pname, pnum)
		}
		backend = s.jp(t, ns, "svc/"+svc, "{.spec.clusterIP}") + ":" + port
	})
	if backend == "" {
		return
	}
	dir := filepath.Join(s.work, "nginx")
	ports, err := cluster.FreePorts(1)
	if err != nil {
		t.Fatal(err)
	}
	listen := fmt.Sprintf("127.0.0.1:%d", ports[0])
	s.check(t, "nginx: configured from the Ingress (host, path, proxy-body-size 2m, proxy-read-timeout 30s), in front of the Service's ClusterIP", func(t *testing.T) {
		conf := s.renderNginx(t, nginxName, dir, listen, backend)
		for _, want := range []string{"server_name " + nginxHost + ";", "location / {", "client_max_body_size 2m;", "proxy_read_timeout 30s;", "proxy_pass http://" + backend + ";"} {
			if !strings.Contains(conf, want) {
				t.Errorf("nginx.conf lacks %q", want)
			}
		}
		s.startNginx(t, "nginx", dir, listen)
	})
	hc := client(nginxHost, listen)
	base := "http://" + nginxHost
	token := s.secretValue(t, nginxName+"-token", "token")
	s.check(t, "nginx: an unknown Host gets nginx's 404; GET /healthz through nginx and the ClusterIP reaches a pod (200)", func(t *testing.T) {
		eq(t, "unknown host", 404, s.do(t, client("other.example", listen), "GET", "http://other.example/healthz", "", nil).code)
		s.waitFor(t, "a 200", s.wait(), func() error {
			if r := s.do(t, hc, "GET", base+"/healthz", "", nil); r.code != 200 {
				return fmt.Errorf("%v", r)
			}
			return nil
		})
	})
	s.check(t, "nginx: a 1.5 MiB body passes nginx (2m) and gets medops-api's own JSON 413", func(t *testing.T) {
		r := s.do(t, hc, "POST", base+"/api/v1/tasks", token, bigTask(3*512*1024))
		if r.code != 413 || !r.isErrorEnvelope() || r.hdr.Get("X-Request-Id") == "" {
			t.Errorf("got %v (X-Request-Id %q: medops-api sets it)", r, r.hdr.Get("X-Request-Id"))
		}
	})
	s.check(t, "nginx: a 3 MiB body is stopped by nginx (proxy-body-size) with a JSON 413", func(t *testing.T) {
		r := s.do(t, hc, "POST", base+"/api/v1/tasks", token, bigTask(3*1024*1024))
		if r.code != 413 || !r.isErrorEnvelope() || r.hdr.Get("X-Request-Id") != "" {
			t.Errorf("got %v (X-Request-Id %q: nginx, not medops-api, must answer)", r, r.hdr.Get("X-Request-Id"))
		}
	})
}
