// Package nginxconf turns an Ingress into the nginx configuration
// ingress-nginx would serve for it: the typed nginx annotations the operator
// writes (proxy-body-size, the proxy timeouts, limit-rps) become nginx
// directives, and a value ingress-nginx would reject (a Kubernetes quantity
// such as 1Mi for a body size) is an error. The end-to-end suite runs a real
// nginx with it in front of the real pods' Service.
package nginxconf

import (
	"errors"
	"fmt"
	"regexp"
	"sort"
	"strconv"
	"strings"

	networkingv1 "k8s.io/api/networking/v1"
)

// The ingress-nginx annotations the operator may set, and how ingress-nginx
// turns each into nginx directives. The e2e nginx is configured from the
// Ingress object the operator wrote, so a wrong value (say "1Mi", which nginx
// does not understand, for proxy-body-size) fails here as it would fail in
// ingress-nginx.
const (
	annPrefix         = "nginx.ingress.kubernetes.io/"
	annBodySize       = annPrefix + "proxy-body-size"
	annReadTimeout    = annPrefix + "proxy-read-timeout"
	annSendTimeout    = annPrefix + "proxy-send-timeout"
	annConnectTimeout = annPrefix + "proxy-connect-timeout"
	annLimitRPS       = annPrefix + "limit-rps"
)

// Annotations that have no effect on a plain-HTTP loopback nginx, so they are
// accepted without a warning.
var ignoredAnnotations = map[string]bool{
	annPrefix + "ssl-redirect":       true,
	annPrefix + "force-ssl-redirect": true,
}

// nginx size syntax: a number with an optional k, m or g suffix.
var nginxSize = regexp.MustCompile(`^[0-9]+[kKmMgG]?$`)

// Options are the loopback-specific parts of the generated config.
type Options struct {
	Listen  string // 127.0.0.1:port nginx listens on
	Backend string // host:port of the backend: the Service's ClusterIP and port
	// Endpoints, when set, replace Backend by the Service's ready endpoints
	// (pod IP:port), balanced round robin, which is what ingress-nginx does:
	// it proxies to the pods, not to the ClusterIP.
	Endpoints []string
	Prefix    string // folder for pid, logs and temp files
	RunAsRoot bool   // nginx started by root: keep workers as root so they can use Prefix
	// JSONErrors makes nginx answer the errors it produces itself (413 for a
	// body over proxy-body-size, 502/504 when the backend fails) in the API's
	// JSON error shape instead of nginx's HTML pages.
	JSONErrors bool
}

// location is one Ingress path turned into an nginx location.
type location struct {
	match          string // "= /x" or "/x"
	bodySize       string
	readTimeout    string
	sendTimeout    string
	connectTimeout string
	limitRPS       int
}

// Render returns a complete nginx.conf serving the Ingress's rules on
// o.Listen, every backend pointing at o.Backend. Hosts not named by the
// Ingress get 404, as from ingress-nginx's default backend.
func Render(ing *networkingv1.Ingress, o Options) (string, []string, error) {
	var warnings []string
	keys := make([]string, 0, len(ing.Annotations))
	for k := range ing.Annotations {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		if !strings.HasPrefix(k, annPrefix) || ignoredAnnotations[k] {
			continue
		}
		switch k {
		case annBodySize, annReadTimeout, annSendTimeout, annConnectTimeout, annLimitRPS:
		default:
			warnings = append(warnings, fmt.Sprintf("annotation %s is not emulated", k))
		}
	}

	base := location{}
	if v, ok := ing.Annotations[annBodySize]; ok {
		if !nginxSize.MatchString(v) {
			return "", warnings, fmt.Errorf("annotation %s=%q is not an nginx size (e.g. 8m, 512k)", annBodySize, v)
		}
		base.bodySize = v
	}
	for ann, dst := range map[string]*string{annReadTimeout: &base.readTimeout, annSendTimeout: &base.sendTimeout, annConnectTimeout: &base.connectTimeout} {
		if v, ok := ing.Annotations[ann]; ok {
			n, err := strconv.Atoi(v)
			if err != nil || n <= 0 {
				return "", warnings, fmt.Errorf("annotation %s=%q must be a positive number of seconds", ann, v)
			}
			*dst = v + "s"
		}
	}
	if v, ok := ing.Annotations[annLimitRPS]; ok {
		n, err := strconv.Atoi(v)
		if err != nil || n <= 0 {
			return "", warnings, fmt.Errorf("annotation %s=%q must be a positive integer", annLimitRPS, v)
		}
		base.limitRPS = n
	}
	if len(ing.Spec.TLS) > 0 {
		warnings = append(warnings, "tls is not emulated: nginx serves plain HTTP on loopback")
	}
	if len(ing.Spec.Rules) == 0 {
		return "", warnings, errors.New("spec.rules is empty")
	}

	var b strings.Builder
	w := func(format string, a ...any) { fmt.Fprintf(&b, format+"\n", a...) }
	if o.RunAsRoot {
		w("user root;")
	}
	w("worker_processes 1;")
	w("pid %s/nginx.pid;", o.Prefix)
	w("error_log %s/error.log info;", o.Prefix)
	w("events { worker_connections 256; }")
	w("http {")
	// The upstream address says which pod served each request.
	w(`  log_format upstream '$remote_addr "$request" $status upstream=$upstream_addr';`)
	w("  access_log %s/access.log upstream;", o.Prefix)
	for _, d := range []string{"client_body", "proxy", "fastcgi", "uwsgi", "scgi"} {
		w("  %s_temp_path %s/%s_temp;", d, o.Prefix, d)
	}
	w("  default_type application/octet-stream;")
	backend := o.Backend
	if len(o.Endpoints) > 0 {
		backend = "endpoints"
		w("  upstream %s {", backend)
		for _, e := range o.Endpoints {
			w("    server %s;", e)
		}
		w("  }")
	}
	if base.limitRPS > 0 {
		// ingress-nginx: rate per client address, burst of five times the
		// rate, answered with 503 once exhausted.
		w("  limit_req_zone $binary_remote_addr zone=rps:1m rate=%dr/s;", base.limitRPS)
		w("  limit_req_status 503;")
	}
	w("  server {")
	w("    listen %s default_server;", o.Listen)
	w("    server_name _;")
	w("    location / { return 404; }")
	w("  }")

	for _, rule := range ing.Spec.Rules {
		host := rule.Host
		if host == "" {
			host = "_"
		}
		if rule.HTTP == nil || len(rule.HTTP.Paths) == 0 {
			return "", warnings, fmt.Errorf("rule for host %q has no http paths", rule.Host)
		}
		w("  server {")
		w("    listen %s;", o.Listen)
		w("    server_name %s;", host)
		if o.JSONErrors {
			w("    error_page 413 @json413;")
			w("    error_page 502 503 504 @json5xx;")
			w("    location @json413 {")
			w("      default_type application/json;")
			w(`      return 413 '{"error":{"code":"too_large","message":"request body is larger than the ingress allows (proxy-body-size %s)"}}\n';`, base.bodySize)
			w("    }")
			w("    location @json5xx {")
			w("      default_type application/json;")
			w(`      return 502 '{"error":{"code":"bad_gateway","message":"the API is not reachable through the ingress"}}\n';`)
			w("    }")
		}
		for _, p := range rule.HTTP.Paths {
			if p.Backend.Service == nil {
				return "", warnings, fmt.Errorf("path %q has no service backend", p.Path)
			}
			path := p.Path
			if path == "" {
				path = "/"
			}
			loc := base
			pt := networkingv1.PathTypePrefix
			if p.PathType != nil {
				pt = *p.PathType
			}
			switch pt {
			case networkingv1.PathTypeExact:
				loc.match = "= " + path
			default: // Prefix and ImplementationSpecific are prefixes in ingress-nginx
				loc.match = path
			}
			w("    location %s {", loc.match)
			if loc.bodySize != "" {
				w("      client_max_body_size %s;", loc.bodySize)
			} else {
				w("      client_max_body_size 1m;") // ingress-nginx's default
			}
			for _, d := range [][2]string{{"proxy_read_timeout", loc.readTimeout}, {"proxy_send_timeout", loc.sendTimeout}, {"proxy_connect_timeout", loc.connectTimeout}} {
				if d[1] != "" {
					w("      %s %s;", d[0], d[1])
				}
			}
			if loc.limitRPS > 0 {
				w("      limit_req zone=rps burst=%d nodelay;", loc.limitRPS*5)
			}
			w("      proxy_http_version 1.1;")
			w("      proxy_set_header Host $host;")
			w("      proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;")
			w("      proxy_set_header X-Forwarded-Host $host;")
			w("      proxy_set_header X-Forwarded-Proto $scheme;")
			w("      proxy_set_header X-Real-IP $remote_addr;")
			w("      proxy_set_header Connection \"\";")
			w("      proxy_pass http://%s;", backend)
			w("    }")
		}
		w("  }")
	}
	w("}")
	return b.String(), warnings, nil
}
