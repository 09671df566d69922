//go:build e2e

package journey

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// moduleDir downloads module@version through the Go module proxy (or finds
// it in the module cache) and returns its folder.
func (s *suite) moduleDir(module, version string) (string, error) {
	cmd := exec.CommandContext(s.ctx, "go", "mod", "download", "-json", module+"@"+version)
	cmd.Dir = s.work // outside any module: nothing to record in a go.sum
	out, err := cmd.Output()
	if err != nil {
		return "", fmt.Errorf("go mod download %s@%s: %w", module, version, err)
	}
	var m struct{ Dir, Error string }
	if err := json.Unmarshal(out, &m); err != nil || m.Dir == "" {
		return "", fmt.Errorf("go mod download %s@%s: %v %s", module, version, err, m.Error)
	}
	return m.Dir, nil
}

// requiredVersion is the version of dep that the go.mod in dir requires.
func requiredVersion(dir, dep string) (string, error) {
	b, err := os.ReadFile(filepath.Join(dir, "go.mod"))
	if err != nil {
		return "", err
	}
	for _, l := range strings.Split(string(b), "\n") {
		f := strings.Fields(strings.TrimPrefix(strings.TrimSpace(l), "require "))
		if len(f) >= 2 && f[0] == dep {
			return f[1], nil
		}
	}
	return "", fmt.Errorf("%s/go.mod does not require %s", dir, dep)
}

// installGatewayAPI installs the standard-channel Gateway API CRDs of the
// version the pinned Traefik is built against, so its Gateway API provider
// runs (and an operator that makes HTTPRoutes finds the kinds served).
func (s *suite) installGatewayAPI() error {
	tv, err := requiredVersion(filepath.Join(s.root, "hack", "tools", "traefik"), "github.com/traefik/traefik/v3")
	if err != nil {
		return err
	}
	tdir, err := s.moduleDir("github.com/traefik/traefik/v3", tv)
	if err != nil {
		return err
	}
	gv, err := requiredVersion(tdir, "sigs.k8s.io/gateway-api")
	if err != nil {
		return err
	}
	gdir, err := s.moduleDir("sigs.k8s.io/gateway-api", gv)
	if err != nil {
		return err
	}
	crds, _ := filepath.Glob(filepath.Join(gdir, "config", "crd", "standard", "gateway.networking.k8s.io_*.yaml"))
	if len(crds) == 0 {
		return fmt.Errorf("no CRDs in %s/config/crd/standard", gdir)
	}
	args := []string{"apply", "--server-side"}
	for _, f := range crds {
		args = append(args, "-f", f)
	}
	if _, err := s.k(args...); err != nil {
		return fmt.Errorf("installing Gateway API %s: %w", gv, err)
	}
	s.log.Info("installed the Gateway API CRDs", "version", gv, "files", len(crds))
	_, err = s.k("wait", "--for=condition=Established", "crd/gateways.gateway.networking.k8s.io", "crd/httproutes.gateway.networking.k8s.io", "--timeout=60s")
	return err
}

// gatewayChecks route to the real pods through Traefik's Gateway API
// provider (issue 15 item 4): a GatewayClass and a Gateway as a k3s user
// would make them (the listener's port is the entrypoint's: Traefik binds a
// listener to the entrypoint with the same port), and spec.route on the
// MedOpsAPI, from which the operator writes the HTTPRoute to its Service.
func (s *suite) gatewayChecks(t *testing.T) {
	const host = "medops-gw.e2e.test"
	if !s.check(t, "Gateway API: a GatewayClass and a Gateway for Traefik, which accepts the Gateway", func(t *testing.T) {
		if err := s.applyNS(fmt.Sprintf(`apiVersion: gateway.networking.k8s.io/v1
kind: GatewayClass
metadata:
  name: traefik
spec:
  controllerName: traefik.io/gateway-controller
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata:
  name: e2e
spec:
  gatewayClassName: traefik
  listeners:
  - {name: web, protocol: HTTP, port: %d, allowedRoutes: {namespaces: {from: Same}}}
`, traefikWebPort)); err != nil {
			t.Fatal(err)
		}
		s.waitFor(t, "the Gateway's status", s.wait(), func() error {
			got, err := s.k("-n", ns, "get", "gateway", "e2e", "-o", `jsonpath={.status.conditions[?(@.type=="Accepted")].status}`)
			if err != nil || got != "True" {
				return fmt.Errorf("Accepted %q %v (see %s)", got, err, s.traefikLogs())
			}
			return nil
		})
	}) {
		return
	}
	if !s.check(t, "spec.route: the operator writes an HTTPRoute from the Gateway to the MedOpsAPI's Service, owned by the MedOpsAPI", func(t *testing.T) {
		s.kt(t, "-n", ns, "patch", "medopsapi", realName, "--type=merge", "-p",
			fmt.Sprintf(`{"spec":{"route":{"enabled":true,"parentRefs":[{"name":"e2e","sectionName":"web"}],"hostnames":[%q]}}}`, host))
		s.waitFor(t, "the HTTPRoute", s.wait(), func() error {
			_, err := s.k("-n", ns, "get", "httproute", realName)
			return err
		})
		port := s.jp(t, ns, "svc/"+realName, "{.spec.ports[0].port}")
		eq(t, "owner, parent, hostname, backend",
			fmt.Sprintf("MedOpsAPI/%s e2e/web [%q] %s:%s", realName, host, realName, port),
			s.jp(t, ns, "httproute/"+realName, `{.metadata.ownerReferences[0].kind}/{.metadata.ownerReferences[0].name} {.spec.parentRefs[0].name}/{.spec.parentRefs[0].sectionName} {.spec.hostnames} {.spec.rules[0].backendRefs[0].name}:{.spec.rules[0].backendRefs[0].port}`))
	}) {
		return
	}
	s.check(t, "Traefik accepts the operator's HTTPRoute (Accepted, ResolvedRefs), and the MedOpsAPI's RouteAccepted condition says so", func(t *testing.T) {
		s.waitFor(t, "the HTTPRoute's status", s.wait(), func() error {
			got, err := s.k("-n", ns, "get", "httproute", realName, "-o",
				`jsonpath={.status.parents[0].controllerName} {.status.parents[0].conditions[?(@.type=="Accepted")].status} {.status.parents[0].conditions[?(@.type=="ResolvedRefs")].status}`)
			if err != nil || got != "traefik.io/gateway-controller True True" {
				return fmt.Errorf("status %q %v (see %s)", got, err, s.traefikLogs())
			}
			return nil
		})
		if _, err := s.k("-n", ns, "wait", "--for=condition=RouteAccepted", "medopsapi/"+realName, "--timeout="+timeoutFlag.String()); err != nil {
			t.Fatalf("%v\nconditions: %s", err, s.jp(t, ns, "medopsapi/"+realName, "{.status.conditions}"))
		}
		got := s.jp(t, ns, "medopsapi/"+realName, `{.status.conditions[?(@.type=="RouteAccepted")].reason}: {.status.conditions[?(@.type=="RouteAccepted")].message}`)
		if want := "Gateway " + ns + "/e2e (listener web)"; !strings.HasPrefix(got, "Accepted: ") || !strings.Contains(got, want) {
			t.Errorf("RouteAccepted %q, want reason Accepted naming %s", got, want)
		}
	})
	gw := client(host, s.traefikAddr)
	token := s.secretValue(t, realName+"-token", "token")
	var id string
	s.check(t, "Gateway API: a task created through the operator's HTTPRoute is read back through the Ingress", func(t *testing.T) {
		s.waitFor(t, "a route", s.wait(), func() error {
			r := s.do(t, gw, "POST", "http://"+host+"/api/v1/tasks", token, []byte(`{"title":"via HTTPRoute"}`))
			if r.code != 201 {
				return fmt.Errorf("%v", r)
			}
			id = r.field("id")
			return nil
		})
		ing := client(realHost, s.traefikAddr)
		r := s.do(t, ing, "GET", "http://"+realHost+"/api/v1/tasks/"+id, token, nil)
		eq(t, "read back", "200 via HTTPRoute", fmt.Sprint(r.code, " ", r.field("title")))
	})
	s.check(t, "with the Ingress off, status.url follows the route's hostname, and a GET of status.url through Traefik reaches the API", func(t *testing.T) {
		s.kt(t, "-n", ns, "patch", "medopsapi", realName, "--type=merge", "-p", `{"spec":{"ingress":{"enabled":false}}}`)
		var url string
		s.waitFor(t, "status.url", s.wait(), func() error {
			url = s.jp(t, ns, "medopsapi/"+realName, "{.status.url}")
			if url != "http://"+host+"/" {
				return fmt.Errorf("status.url %q", url)
			}
			if _, err := s.k("-n", ns, "get", "ingress", realName); err == nil {
				return fmt.Errorf("the Ingress is still there")
			}
			return nil
		})
		if id == "" {
			t.Fatal("no task was created through the route")
		}
		s.waitFor(t, "the Ingress's host to leave Traefik", s.wait(), func() error {
			ing := client(realHost, s.traefikAddr)
			if r := s.do(t, ing, "GET", "http://"+realHost+"/healthz", "", nil); r.code != 404 {
				return fmt.Errorf("the old Ingress host still answers %v", r)
			}
			return nil
		})
		eq(t, "GET status.url", "200 medops-api", func() string { r := s.do(t, gw, "GET", url, "", nil); return fmt.Sprint(r.code, " ", r.field("name")) }())
		r := s.do(t, gw, "GET", url+"api/v1/tasks/"+id, token, nil)
		eq(t, "GET status.url + api/v1/tasks/"+id, "200 via HTTPRoute", fmt.Sprint(r.code, " ", r.field("title")))
	})
}
