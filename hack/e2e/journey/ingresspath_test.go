//go:build e2e

package journey

import (
	"fmt"
	"strings"
	"testing"
)

// A MedOpsAPI served under a path prefix through Traefik, with nginx-only
// settings that Traefik ignores (issue 14 items 11 and 16).
const (
	pathName = "medops-path"
	pathHost = "medops-path.e2e.test"
)

func (s *suite) ingressPathChecks(t *testing.T) {
	if !s.check(t, "kubectl apply a MedOpsAPI for amd64 behind a traefik Ingress at path /medops, with limitRPS and proxyReadTimeout", func(t *testing.T) {
		if err := s.applyNS(fmt.Sprintf(`apiVersion: medops.io/v1alpha1
kind: MedOpsAPI
metadata:
  name: %s
spec:
  architectures: [amd64]
  storage: {ephemeral: true}
  ingress:
    enabled: true
    className: traefik
    host: %s
    path: /medops
    limitRPS: 10
    proxyReadTimeout: 30s
`, pathName, pathHost)); err != nil {
			t.Fatal(err)
		}
	}) {
		return
	}
	s.waitReady(t, pathName)
	hc := client(pathHost, s.traefikAddr)
	url := s.jp(t, ns, "medopsapi/"+pathName, "{.status.url}")
	api := strings.TrimSuffix(url, "/") + "/api/v1/tasks"
	token := s.secretValue(t, pathName+"-token", "token")
	s.check(t, "ingress.path /medops: status.url is under the path, GET of it is medops-api's index, and Traefik serves the API at status.url + /api/v1 (create, read back, list)", func(t *testing.T) {
		eq(t, "status.url", "http://"+pathHost+"/medops", strings.TrimSuffix(url, "/"))
		s.waitFor(t, "GET status.url through Traefik", s.wait(), func() error {
			if r := s.do(t, hc, "GET", url, "", nil); r.code != 200 || r.field("name") != "medops-api" {
				return fmt.Errorf("GET %s: %v", url, r)
			}
			return nil
		})
		var id string
		s.waitFor(t, "a create through Traefik", s.wait(), func() error {
			r := s.do(t, hc, "POST", api, token, []byte(`{"title":"under /medops"}`))
			if r.code != 201 || r.field("id") == "" {
				return fmt.Errorf("POST %s: %v", api, r)
			}
			id = r.field("id")
			if loc := r.hdr.Get("Location"); loc != "" && !strings.HasPrefix(loc, "/medops/api/v1/tasks/") {
				t.Errorf("Location %q is not under the path", loc)
			}
			return nil
		})
		g := s.do(t, hc, "GET", api+"/"+id, token, nil)
		eq(t, "GET", "200 under /medops", fmt.Sprint(g.code, " ", g.field("title")))
		l := s.do(t, hc, "GET", api, token, nil)
		if l.code != 200 || !strings.Contains(string(l.body), id) {
			t.Errorf("GET %s: %v", api, l)
		}
	})
	s.check(t, "className traefik with limitRPS and proxyReadTimeout: the IngressSettingsIgnored condition and a Warning Event name both", func(t *testing.T) {
		got := s.jp(t, ns, "medopsapi/"+pathName, `{.status.conditions[?(@.type=="IngressSettingsIgnored")].status} {.status.conditions[?(@.type=="IngressSettingsIgnored")].reason}`)
		eq(t, "condition", "True UnsupportedByIngressClass", got)
		msg := s.jp(t, ns, "medopsapi/"+pathName, `{.status.conditions[?(@.type=="IngressSettingsIgnored")].message}`)
		for _, want := range []string{"traefik", "ingress.limitRPS", "ingress.proxyReadTimeout"} {
			if !strings.Contains(msg, want) {
				t.Errorf("condition message %q lacks %q", msg, want)
			}
		}
		ev := s.kt(t, "-n", ns, "get", "events", "--field-selector", "involvedObject.kind=MedOpsAPI,involvedObject.name="+pathName+",type=Warning",
			"-o", "jsonpath={range .items[*]}{.reason}: {.message}{\"\\n\"}{end}")
		if !strings.Contains(ev, "IngressSettingsIgnored: ") || !strings.Contains(ev, "ingress.limitRPS") {
			t.Errorf("Warning Events of %s:\n%s", pathName, ev)
		}
	})
}
