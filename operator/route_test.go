package operator

import (
	"context"
	"fmt"
	"net/http"
	"testing"

	"github.com/go-logr/logr"
	monitoringv1 "github.com/prometheus-operator/prometheus-operator/pkg/apis/monitoring/v1"
	appsv1 "k8s.io/api/apps/v1"
	networkingv1 "k8s.io/api/networking/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"

	"github.com/medops/medops/api/v1alpha1"
	"github.com/medops/medops/internal/testenv"
	"github.com/medops/medops/operator/resource"
)

// routeSpec is a route on a Gateway of the test's namespace.
func routeSpec() *v1alpha1.RouteSpec {
	return &v1alpha1.RouteSpec{
		Enabled:    true,
		ParentRefs: []v1alpha1.RouteParentRef{{Name: "gw", SectionName: "web"}},
		Hostnames:  []v1alpha1.RouteHostname{"*.lab.example.org", "api.lab.example.org"},
		Path:       "/medops",
		Timeouts:   &v1alpha1.RouteTimeouts{Request: ptr("1m"), BackendRequest: ptr("30s")},
	}
}

func monitoringSpec() *v1alpha1.MonitoringSpec {
	return &v1alpha1.MonitoringSpec{
		ServiceMonitor:      &v1alpha1.ServiceMonitorSpec{Enabled: true, Labels: map[string]string{"release": "kube-prometheus-stack"}, Interval: "15s"},
		PrometheusNamespace: "monitoring",
	}
}

// setRouteParentStatus plays the Gateway controller: it reports on the route
// for parent gw/web with the given Accepted and ResolvedRefs statuses.
func setRouteParentStatus(t *testing.T, s *envSuite, ns, name string, accepted, resolved metav1.ConditionStatus, resolvedReason string) {
	t.Helper()
	eventually(t, wait, "write the HTTPRoute's parent status", func() error {
		var r gatewayv1.HTTPRoute
		if err := get(t, s, ns, name, &r); err != nil {
			return err
		}
		now := metav1.Now()
		r.Status.Parents = []gatewayv1.RouteParentStatus{{
			ParentRef:      gatewayv1.ParentReference{Name: "gw", SectionName: ptr(gatewayv1.SectionName("web"))},
			ControllerName: "example.org/gateway-controller",
			Conditions: []metav1.Condition{
				{Type: "Accepted", Status: accepted, Reason: "Accepted", Message: "route attached", ObservedGeneration: r.Generation, LastTransitionTime: now},
				{Type: "ResolvedRefs", Status: resolved, Reason: resolvedReason, Message: "backend " + resolvedReason, ObservedGeneration: r.Generation, LastTransitionTime: now},
			},
		}}
		return s.client.Status().Update(t.Context(), &r)
	})
}

func waitRouteCondition(t *testing.T, s *envSuite, ns, name string, want metav1.ConditionStatus, reason string) *v1alpha1.MedOpsAPI {
	t.Helper()
	var m v1alpha1.MedOpsAPI
	eventually(t, wait, fmt.Sprintf("RouteAccepted %s/%s", want, reason), func() error {
		if err := get(t, s, ns, name, &m); err != nil {
			return err
		}
		c := condition(&m, v1alpha1.ConditionRouteAccepted)
		if c == nil || c.Status != want || c.Reason != reason || c.ObservedGeneration != m.Generation {
			return fmt.Errorf("RouteAccepted = %+v", c)
		}
		return nil
	})
	return &m
}

// TestRouteAndServiceMonitor: a MedOpsAPI with a route and a ServiceMonitor
// gets both, status mirrors the parent Gateway's verdict on the route,
// foreign edits are undone, and switching them off deletes them.
func TestRouteAndServiceMonitor(t *testing.T) {
	t.Parallel()
	s := suite(t)
	ns := s.newNamespace(t, "route")
	create(t, s, newAPI(ns, "api", func(m *v1alpha1.MedOpsAPI) {
		m.Spec.Route = routeSpec()
		m.Spec.Monitoring = monitoringSpec()
		m.Spec.NetworkPolicy = &v1alpha1.NetworkPolicySpec{Enabled: true}
	}))

	var route gatewayv1.HTTPRoute
	eventually(t, wait, "HTTPRoute created", func() error { return get(t, s, ns, "api", &route) })
	if got := route.Spec.ParentRefs; len(got) != 1 || got[0].Name != "gw" || got[0].SectionName == nil || *got[0].SectionName != "web" {
		t.Errorf("parentRefs = %+v, want Gateway gw listener web", got)
	}
	if got := route.Spec.Hostnames; len(got) != 2 || got[1] != "api.lab.example.org" {
		t.Errorf("hostnames = %v", got)
	}
	rule := route.Spec.Rules[0]
	if p := rule.Matches[0].Path; p == nil || *p.Value != "/medops" || *p.Type != gatewayv1.PathMatchPathPrefix {
		t.Errorf("path match = %+v, want PathPrefix /medops", p)
	}
	if b := rule.BackendRefs[0]; b.Name != "api" || b.Port == nil || *b.Port != 80 {
		t.Errorf("backendRef = %+v, want Service api port 80", b)
	}
	if to := rule.Timeouts; to == nil || *to.Request != "1m" || *to.BackendRequest != "30s" {
		t.Errorf("timeouts = %+v, want request 1m, backendRequest 30s", to)
	}

	var sm monitoringv1.ServiceMonitor
	eventually(t, wait, "ServiceMonitor created", func() error { return get(t, s, ns, "api", &sm) })
	if sm.Labels["release"] != "kube-prometheus-stack" || sm.Labels[resource.LabelManagedBy] != resource.ManagedByValue {
		t.Errorf("ServiceMonitor labels = %v: want the user's release label and the operator's", sm.Labels)
	}
	if e := sm.Spec.Endpoints; len(e) != 1 || e[0].Port != "http" || e[0].Path != "/metrics" || e[0].Interval != "15s" {
		t.Errorf("endpoints = %+v", e)
	}
	var np networkingv1.NetworkPolicy
	eventually(t, wait, "NetworkPolicy created", func() error { return get(t, s, ns, "api", &np) })
	from := np.Spec.Ingress[0].From
	if last := from[len(from)-1]; last.NamespaceSelector == nil || last.NamespaceSelector.MatchLabels[resource.LabelNamespaceName] != "monitoring" {
		t.Errorf("NetworkPolicy peers %+v do not admit namespace monitoring", from)
	}

	// No Gateway controller has answered yet.
	m := waitRouteCondition(t, s, ns, "api", metav1.ConditionUnknown, ReasonRoutePending)
	if m.Status.URL != "http://api.lab.example.org/medops" {
		t.Errorf("status.url = %q, want the route's first non-wildcard hostname and path", m.Status.URL)
	}
	if c := condition(m, v1alpha1.ConditionServiceMonitorReady); c == nil || c.Status != metav1.ConditionTrue {
		t.Errorf("ServiceMonitorReady = %+v", c)
	}
	if c := condition(m, v1alpha1.ConditionDegraded); c == nil || c.Status != metav1.ConditionFalse {
		t.Errorf("Degraded = %+v, want False", c)
	}

	// The Gateway accepts the route, then loses its backend.
	setRouteParentStatus(t, s, ns, "api", metav1.ConditionTrue, metav1.ConditionTrue, "ResolvedRefs")
	waitRouteCondition(t, s, ns, "api", metav1.ConditionTrue, ReasonRouteAccepted)
	setRouteParentStatus(t, s, ns, "api", metav1.ConditionTrue, metav1.ConditionFalse, "BackendNotFound")
	m = waitRouteCondition(t, s, ns, "api", metav1.ConditionFalse, "BackendNotFound")
	if c := condition(m, v1alpha1.ConditionRouteAccepted); c.Message != "Gateway "+ns+"/gw (listener web): ResolvedRefs is False: backend BackendNotFound" {
		t.Errorf("RouteAccepted message = %q", c.Message)
	}

	// Someone edits the route and deletes the ServiceMonitor.
	eventually(t, wait, "edit HTTPRoute", func() error {
		if err := get(t, s, ns, "api", &route); err != nil {
			return err
		}
		route.Spec.Hostnames = []gatewayv1.Hostname{"evil.example.org"}
		return s.client.Update(t.Context(), &route, client.FieldOwner("someone"))
	})
	if err := s.client.Delete(t.Context(), &sm); err != nil {
		t.Fatal(err)
	}
	eventually(t, wait, "route and ServiceMonitor restored", func() error {
		if err := get(t, s, ns, "api", &route); err != nil {
			return err
		}
		if h := route.Spec.Hostnames; len(h) != 2 || h[0] != "*.lab.example.org" {
			return fmt.Errorf("hostnames %v", h)
		}
		var again monitoringv1.ServiceMonitor
		if err := get(t, s, ns, "api", &again); err != nil {
			return err
		}
		if again.UID == sm.UID {
			return fmt.Errorf("ServiceMonitor not re-created")
		}
		return nil
	})

	// An Ingress takes status.url back; switching route and monitor off
	// deletes them and drops their conditions.
	update(t, s, ns, "api", func(m *v1alpha1.MedOpsAPI) {
		m.Spec.Ingress = &v1alpha1.IngressSpec{Enabled: true, Host: "old.example.org"}
		m.Spec.Route.Enabled = false
		m.Spec.Monitoring.ServiceMonitor.Enabled = false
	})
	eventually(t, wait, "route and ServiceMonitor deleted", func() error {
		if err := gone(t, s, ns, "api", &gatewayv1.HTTPRoute{}); err != nil {
			return err
		}
		if err := gone(t, s, ns, "api", &monitoringv1.ServiceMonitor{}); err != nil {
			return err
		}
		var m v1alpha1.MedOpsAPI
		if err := get(t, s, ns, "api", &m); err != nil {
			return err
		}
		if m.Status.ObservedGeneration != m.Generation {
			return fmt.Errorf("status of generation %d", m.Status.ObservedGeneration)
		}
		for _, typ := range []string{v1alpha1.ConditionRouteAccepted, v1alpha1.ConditionServiceMonitorReady} {
			if c := condition(&m, typ); c != nil {
				return fmt.Errorf("%s still reported: %+v", typ, c)
			}
		}
		if m.Status.URL != "http://old.example.org/" {
			return fmt.Errorf("status.url = %q, want the Ingress's", m.Status.URL)
		}
		return nil
	})
}

// TestOptionalKindsMissing runs the operator on a control plane without
// Gateway API and the Prometheus Operator's CRDs: it starts (no watch of a
// missing kind), makes the workload, says on conditions what it cannot
// make, and then stays quiet: no status rewrites, no retries.
func TestOptionalKindsMissing(t *testing.T) {
	t.Parallel()
	_, cfg := testenv.StartForTest(t, testenv.CRDDir())
	kinds, err := ServedKinds(cfg)
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range kinds {
		if k.GVK.Kind == "HTTPRoute" || k.GVK.Kind == "ServiceMonitor" {
			t.Errorf("ServedKinds kept %s on a cluster without its CRD", k.GVK.Kind)
		}
	}
	if len(kinds) != len(resource.Kinds())-2 {
		t.Errorf("ServedKinds: %d kinds, want every kind but HTTPRoute and ServiceMonitor (%d)", len(kinds), len(resource.Kinds())-2)
	}

	// The operator's writes are counted, and its reconciles recorded.
	writes := &writeCounter{}
	reconciles := &reconcileLog{writes: writes}
	opCfg := rest.CopyConfig(cfg)
	opCfg.WrapTransport = func(rt http.RoundTripper) http.RoundTripper { return &countingTransport{next: rt, c: writes} }
	mgr, err := NewManager(opCfg, Options{MetricsBindAddress: "0", HealthProbeBindAddress: "0",
		Logger: logr.Discard(), SkipNameValidation: true, wrap: reconciles.wrap})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- mgr.Start(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("manager: %v", err)
		}
	})
	c := mgr.GetAPIReader()
	w, err := client.New(cfg, client.Options{Scheme: mgr.GetScheme()})
	if err != nil {
		t.Fatal(err)
	}
	m := newAPI("default", "api", func(m *v1alpha1.MedOpsAPI) {
		m.Spec.Route = routeSpec()
		m.Spec.Monitoring = monitoringSpec()
	})
	if err := w.Create(t.Context(), m); err != nil {
		t.Fatal(err)
	}
	key := types.NamespacedName{Namespace: "default", Name: "api"}
	eventually(t, wait, "conditions say what is missing", func() error {
		if err := c.Get(t.Context(), key, m); err != nil {
			return err
		}
		for typ, reason := range map[string]string{
			v1alpha1.ConditionRouteAccepted:       ReasonRouteUnavailable,
			v1alpha1.ConditionServiceMonitorReady: ReasonMonitoringUnavailable,
			v1alpha1.ConditionDegraded:            ReasonRouteUnavailable,
		} {
			c := meta.FindStatusCondition(m.Status.Conditions, typ)
			if c == nil || c.Reason != reason || c.ObservedGeneration != m.Generation {
				return fmt.Errorf("%s = %+v, want reason %s", typ, c, reason)
			}
		}
		return nil
	})
	if c := meta.FindStatusCondition(m.Status.Conditions, v1alpha1.ConditionRouteAccepted); c.Message !=
		"Gateway API is not installed on this cluster (no gateway.networking.k8s.io/v1 HTTPRoute): install its CRDs and restart the operator" {
		t.Errorf("RouteAccepted message = %q", c.Message)
	}
	if err := c.Get(t.Context(), key, &appsv1.Deployment{}); err != nil {
		t.Errorf("the workload was not made without Gateway API: %v", err)
	}
	// Quiet: the MedOpsAPI (its status) is not rewritten again and again,
	// and nothing is retried. Once one reconcile wrote nothing and asked
	// for no requeue, the next one, woken by a label, does the same.
	poke := pokeLabel(t, w, key)
	reconciles.converge(t, key, poke)
	for _, r := range reconciles.next(t, key, poke, -1) {
		if !r.quiet() {
			t.Errorf("reconcile after convergence: %d writes, result %+v, error %v", r.writes, r.result, r.err)
		}
	}
}
