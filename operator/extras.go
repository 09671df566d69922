package operator

import (
	"fmt"
	"strings"

	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"

	"github.com/medops/medops/api/v1alpha1"
	"github.com/medops/medops/operator/resource"
)

// Reasons of the RouteAccepted and ServiceMonitorReady conditions.
const (
	// ReasonRouteUnavailable: spec.route is enabled but the cluster does not
	// serve gateway.networking.k8s.io/v1 HTTPRoute.
	ReasonRouteUnavailable = "RouteUnavailable"
	// ReasonMonitoringUnavailable: spec.monitoring.serviceMonitor is enabled
	// but the cluster does not serve monitoring.coreos.com/v1 ServiceMonitor.
	ReasonMonitoringUnavailable = "MonitoringUnavailable"
	// ReasonRoutePending: no Gateway of parentRefs has reported on the
	// current generation of the route yet.
	ReasonRoutePending     = "Pending"
	ReasonRouteAccepted    = "Accepted"
	ReasonServiceMonitored = "Applied"
)

// unavailableKinds returns the kinds the spec wants that the cluster does
// not serve: the optional kinds of all that ServedKinds left out of served.
func unavailableKinds(all, served []resource.Kind, s *v1alpha1.MedOpsAPISpec) map[string]bool {
	have := make(map[string]bool, len(served))
	for _, k := range served {
		have[k.GVK.String()] = true
	}
	out := map[string]bool{}
	for _, k := range all {
		if have[k.GVK.String()] || (k.Wanted != nil && !k.Wanted(s)) {
			continue
		}
		out[k.GVK.Kind] = true
	}
	return out
}

// setExtraConditions sets RouteAccepted and ServiceMonitorReady, which are
// present only while the spec asks for a route or a ServiceMonitor. A kind
// the cluster lacks also makes Degraded True (the operator cannot reach the
// desired state and says why), but leaves Ready alone: the pods serve, in the
// cluster and through an Ingress. Nothing is retried: only a restart of the
// operator after the CRDs are installed can help, so there is no requeue and
// no error log.
func setExtraConditions(status *v1alpha1.MedOpsAPIStatus, m *v1alpha1.MedOpsAPI, obs observed) {
	gen := m.Generation
	set := func(typ string, cs metav1.ConditionStatus, reason, msg string) {
		meta.SetStatusCondition(&status.Conditions, metav1.Condition{
			Type: typ, Status: cs, Reason: reason, Message: msg, ObservedGeneration: gen,
		})
	}
	var missing []string
	switch {
	case !m.Spec.RouteEnabled():
		meta.RemoveStatusCondition(&status.Conditions, v1alpha1.ConditionRouteAccepted)
	case obs.unavailable["HTTPRoute"]:
		msg := "Gateway API is not installed on this cluster (no gateway.networking.k8s.io/v1 HTTPRoute): install its CRDs and restart the operator"
		set(v1alpha1.ConditionRouteAccepted, metav1.ConditionFalse, ReasonRouteUnavailable, msg)
		missing = append(missing, msg)
	default:
		cs, reason, msg := routeAccepted(m, obs.route)
		set(v1alpha1.ConditionRouteAccepted, cs, reason, msg)
	}
	switch {
	case !m.Spec.ServiceMonitorEnabled():
		meta.RemoveStatusCondition(&status.Conditions, v1alpha1.ConditionServiceMonitorReady)
	case obs.unavailable["ServiceMonitor"]:
		msg := "the Prometheus Operator's CRDs are not installed on this cluster (no monitoring.coreos.com/v1 ServiceMonitor): install them and restart the operator"
		set(v1alpha1.ConditionServiceMonitorReady, metav1.ConditionFalse, ReasonMonitoringUnavailable, msg)
		missing = append(missing, msg)
	default:
		set(v1alpha1.ConditionServiceMonitorReady, metav1.ConditionTrue, ReasonServiceMonitored,
			"ServiceMonitor "+m.Name+" selects the Service's http port, path "+resource.MetricsPath)
	}
	if len(missing) == 0 {
		return
	}
	// A stuck rollout's Degraded stays: it is the more urgent news.
	if c := meta.FindStatusCondition(status.Conditions, v1alpha1.ConditionDegraded); c == nil || c.Status != metav1.ConditionTrue {
		reason := ReasonRouteUnavailable
		if !obs.unavailable["HTTPRoute"] || !m.Spec.RouteEnabled() {
			reason = ReasonMonitoringUnavailable
		}
		degraded := metav1.Condition{Type: v1alpha1.ConditionDegraded, Status: metav1.ConditionTrue, Reason: reason,
			Message: strings.Join(missing, "; "), ObservedGeneration: gen}
		// computeWorkloadStatus has just set Degraded False, which stamped
		// a new transition time: keep the time of a Degraded that was
		// already True, or every reconcile would rewrite the status.
		if prev := meta.FindStatusCondition(m.Status.Conditions, v1alpha1.ConditionDegraded); prev != nil && prev.Status == metav1.ConditionTrue {
			degraded.LastTransitionTime = prev.LastTransitionTime
		}
		meta.SetStatusCondition(&status.Conditions, degraded)
	}
}

// routeAccepted mirrors the route's status.parents: True when every Gateway
// of spec.route.parentRefs reports Accepted and ResolvedRefs True for the
// route's current generation; False with the Gateway's own reason when one
// refuses; Unknown while one has not reported yet.
func routeAccepted(m *v1alpha1.MedOpsAPI, route *gatewayv1.HTTPRoute) (metav1.ConditionStatus, string, string) {
	if route == nil {
		return metav1.ConditionUnknown, ReasonRoutePending, "the HTTPRoute does not exist yet"
	}
	var accepted []string
	for _, ref := range m.Spec.Route.ParentRefs {
		ns := ref.Namespace
		if ns == "" {
			ns = m.Namespace
		}
		gw := "Gateway " + ns + "/" + ref.Name
		if ref.SectionName != "" {
			gw += " (listener " + ref.SectionName + ")"
		}
		ps := findParentStatus(route, ns, ref)
		if ps == nil {
			return metav1.ConditionUnknown, ReasonRoutePending, gw + " has not reported on the route yet (is a Gateway controller running?)"
		}
		for _, typ := range []string{string(gatewayv1.RouteConditionAccepted), string(gatewayv1.RouteConditionResolvedRefs)} {
			c := meta.FindStatusCondition(ps.Conditions, typ)
			switch {
			case c == nil || c.ObservedGeneration < route.Generation:
				return metav1.ConditionUnknown, ReasonRoutePending, fmt.Sprintf("%s has not reported %s for the route's generation %d yet", gw, typ, route.Generation)
			case c.Status != metav1.ConditionTrue:
				return metav1.ConditionFalse, c.Reason, fmt.Sprintf("%s: %s is %s: %s", gw, typ, c.Status, c.Message)
			}
		}
		accepted = append(accepted, gw)
	}
	return metav1.ConditionTrue, ReasonRouteAccepted, "accepted with resolved backend by " + strings.Join(accepted, ", ")
}

// findParentStatus returns the route's status entry of the Gateway ref
// names (ns is ref's namespace, defaulted to the route's).
func findParentStatus(route *gatewayv1.HTTPRoute, ns string, ref v1alpha1.RouteParentRef) *gatewayv1.RouteParentStatus {
	for i := range route.Status.Parents {
		p := &route.Status.Parents[i]
		pns := route.Namespace
		if p.ParentRef.Namespace != nil {
			pns = string(*p.ParentRef.Namespace)
		}
		section := ""
		if p.ParentRef.SectionName != nil {
			section = string(*p.ParentRef.SectionName)
		}
		if string(p.ParentRef.Name) == ref.Name && pns == ns && section == ref.SectionName {
			return p
		}
	}
	return nil
}
