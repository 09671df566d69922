//go:build e2e

package journey

import (
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/medops/medops/hack/e2e/cluster"
	"github.com/medops/medops/hack/e2e/upstream"
	"github.com/medops/medops/internal/ociimage"
)

// Traefik, the ingress controller k3s bundles, runs as k3s runs it: a
// Deployment in kube-system with its own ServiceAccount and RBAC, reached
// through a LoadBalancer Service. Its image is built with internal/ociimage
// from the pinned binary (hack/tools.sh traefik), for amd64 only.
const (
	traefikImage = "localhost/medops/traefik:e2e"
	// traefikWebPort is the web entrypoint's port in the pod; a Gateway
	// listener binds to the entrypoint of the same port.
	traefikWebPort = 8000
)

// traefikProgram packs the pinned Traefik binary as an image.
func (s *suite) traefikProgram() ociimage.Program {
	return ociimage.Program{
		Name: "traefik", Package: "github.com/traefik/traefik/v3/cmd/traefik", Path: "/traefik", Ref: traefikImage,
		Description: "Traefik, as k3s bundles it (the end-to-end suite's pinned build)",
		Binaries:    map[string]string{"linux/amd64": s.tools.traefik},
	}
}

// traefikManifests are what k3s's Traefik chart installs, trimmed to what
// the suite uses: its arguments are the chart's (web on 8000, the traefik
// entrypoint with /ping on 9000, the Ingress provider with
// allowEmptyServices and the Service as the Ingresses' published address),
// plus the Gateway API provider. The RBAC is what those two providers read
// and the statuses they write.
func traefikManifests() string {
	return fmt.Sprintf(`apiVersion: v1
kind: ServiceAccount
metadata: {name: traefik, namespace: kube-system}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: {name: traefik-kube-system}
rules:
- apiGroups: [""]
  resources: [services, secrets, configmaps, nodes, namespaces]
  verbs: [get, list, watch]
- apiGroups: [discovery.k8s.io]
  resources: [endpointslices]
  verbs: [list, watch]
- apiGroups: [networking.k8s.io]
  resources: [ingresses, ingressclasses]
  verbs: [get, list, watch]
- apiGroups: [networking.k8s.io]
  resources: [ingresses/status]
  verbs: [update]
- apiGroups: [gateway.networking.k8s.io]
  resources: [backendtlspolicies, gatewayclasses, gateways, grpcroutes, httproutes, referencegrants, tcproutes, tlsroutes]
  verbs: [get, list, watch]
- apiGroups: [gateway.networking.k8s.io]
  resources: [backendtlspolicies/status, gatewayclasses/status, gateways/status, grpcroutes/status, httproutes/status, referencegrants/status, tcproutes/status, tlsroutes/status]
  verbs: [update]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {name: traefik-kube-system}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: traefik-kube-system}
subjects:
- {kind: ServiceAccount, name: traefik, namespace: kube-system}
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: traefik
  namespace: kube-system
  labels: {app.kubernetes.io/name: traefik, app.kubernetes.io/instance: traefik-kube-system}
spec:
  replicas: 1
  selector:
    matchLabels: {app.kubernetes.io/name: traefik, app.kubernetes.io/instance: traefik-kube-system}
  template:
    metadata:
      labels: {app.kubernetes.io/name: traefik, app.kubernetes.io/instance: traefik-kube-system}
    spec:
      serviceAccountName: traefik
      # The image is built for amd64 only here (k3s's is multi-arch).
      nodeSelector: {kubernetes.io/arch: amd64}
      terminationGracePeriodSeconds: 60
      securityContext:
        runAsNonRoot: true
        runAsUser: 65532
        runAsGroup: 65532
        seccompProfile: {type: RuntimeDefault}
      containers:
      - name: traefik
        image: %s
        imagePullPolicy: IfNotPresent
        args:
        - --global.checknewversion=false
        - --global.sendanonymoususage=false
        - --entryPoints.web.address=:%d/tcp
        - --entryPoints.traefik.address=:9000/tcp
        - --ping=true
        - --ping.entryPoint=traefik
        - --providers.kubernetesingress=true
        # As k3s ships it (Traefik's chart sets it since v31): an Ingress whose
        # Service has no ready endpoint, as in a Recreate rollout, answers
        # 503, not the 404 that says "no such route" (issue 20 item 19a).
        - --providers.kubernetesingress.allowEmptyServices=true
        - --providers.kubernetesingress.ingressendpoint.publishedservice=kube-system/traefik
        - --providers.kubernetesgateway=true
        - --log.level=INFO
        - --accesslog=true
        ports:
        - {name: web, containerPort: %d}
        - {name: traefik, containerPort: 9000}
        readinessProbe:
          httpGet: {path: /ping, port: traefik}
          periodSeconds: 2
          failureThreshold: 1
        livenessProbe:
          httpGet: {path: /ping, port: traefik}
          periodSeconds: 10
          failureThreshold: 3
        securityContext:
          allowPrivilegeEscalation: false
          readOnlyRootFilesystem: true
          capabilities: {drop: [ALL]}
        volumeMounts: [{name: tmp, mountPath: /tmp}]
      volumes: [{name: tmp, emptyDir: {}}]
---
apiVersion: v1
kind: Service
metadata:
  name: traefik
  namespace: kube-system
  labels: {app.kubernetes.io/name: traefik, app.kubernetes.io/instance: traefik-kube-system}
spec:
  type: LoadBalancer
  selector: {app.kubernetes.io/name: traefik, app.kubernetes.io/instance: traefik-kube-system}
  ports:
  - {name: web, port: 80, targetPort: web, protocol: TCP}
`, traefikImage, traefikWebPort, traefikWebPort)
}

// startTraefik installs the IngressClass as k3s's chart makes it, the
// Gateway API CRDs and Traefik, starts the suite's upstream, and plays
// k3s's servicelb: the Service's load-balancer address is the amd64 node's
// IP, where kube-proxy sends port 80 to the Traefik pod. Traefik serves the
// Ingresses of class traefik and writes that address into their status; it
// routes to the pods' IPs from the Services' EndpointSlices.
func (s *suite) startTraefik(t *testing.T) error {
	if err := s.apply(`apiVersion: networking.k8s.io/v1
kind: IngressClass
metadata:
  name: traefik
spec:
  controller: traefik.io/ingress-controller
`); err != nil {
		return fmt.Errorf("IngressClass traefik: %w", err)
	}
	up, err := upstream.Start(cluster.NodeIP + ":0") // pods reach the node's address
	if err != nil {
		return err
	}
	s.upstream = up
	prev := s.stopBackground
	s.stopBackground = func() {
		up.Close()
		if prev != nil {
			prev()
		}
	}
	if err := s.installGatewayAPI(); err != nil {
		return err
	}
	if err := s.apply(traefikManifests()); err != nil {
		return fmt.Errorf("Traefik in kube-system: %w", err)
	}
	if _, err := s.k("-n", "kube-system", "patch", "service", "traefik", "--subresource=status", "--type=merge",
		"-p", fmt.Sprintf(`{"status":{"loadBalancer":{"ingress":[{"ip":%q}]}}}`, cluster.NodeIP)); err != nil {
		return fmt.Errorf("the traefik Service's load-balancer address: %w", err)
	}
	s.traefikAddr = net.JoinHostPort(cluster.NodeIP, "80")
	if _, err := s.k("-n", "kube-system", "rollout", "status", "deploy/traefik", "--timeout=3m"); err != nil {
		return fmt.Errorf("%w\n%s", err, s.traefikLogs())
	}
	// Through kube-proxy: an unknown host gets Traefik's own 404.
	return s.poll(60*time.Second, func() error {
		resp, err := (&http.Client{Timeout: 3 * time.Second}).Get("http://" + s.traefikAddr + "/")
		if err != nil {
			return err
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusNotFound {
			return fmt.Errorf("GET / of no known host through %s: %s, want Traefik's 404", s.traefikAddr, resp.Status)
		}
		return nil
	})
}

// traefikLogs is the Traefik pod's log, for error messages.
func (s *suite) traefikLogs() string {
	out, err := s.k("-n", "kube-system", "logs", "deploy/traefik", "--tail=40")
	if err != nil {
		return "(no Traefik log: " + err.Error() + ")"
	}
	return "Traefik's log:\n" + out
}

// saveTraefikLog keeps the Traefik pod's log in the work folder's logs
// before the teardown deletes the pod.
func (s *suite) saveTraefikLog() {
	if s.c == nil || !s.c.Alive("kube-apiserver") {
		return
	}
	if out, err := s.k("-n", "kube-system", "logs", "deploy/traefik", "--tail=-1"); err == nil {
		_ = os.WriteFile(filepath.Join(s.work, "logs", "traefik.log"), []byte(out), 0o644)
	}
}
