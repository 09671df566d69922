package resource

import (
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"
)

// BuildHTTPRoute returns the HTTPRoute from spec.route's Gateways to the
// Service, or nil when spec.route is unset.
//
// Every field the HTTPRoute CRD would default (parentRef group and kind,
// the path match type, backendRef group, kind and weight) is set here to
// that same default: the live route then holds exactly what was applied,
// the subset check of operator/apply passes, and a converged operator does
// not re-apply against the apiserver's defaulting.
func BuildHTTPRoute(d *Desired) *gatewayv1.HTTPRoute {
	m := d.MedOpsAPI
	spec := m.Spec.Route
	if spec == nil {
		return nil
	}
	parents := make([]gatewayv1.ParentReference, 0, len(spec.ParentRefs))
	for _, p := range spec.ParentRefs {
		ref := gatewayv1.ParentReference{
			Group: ptr(gatewayv1.Group(gatewayv1.GroupName)),
			Kind:  ptr(gatewayv1.Kind("Gateway")),
			Name:  gatewayv1.ObjectName(p.Name),
		}
		if p.Namespace != "" {
			ref.Namespace = ptr(gatewayv1.Namespace(p.Namespace))
		}
		if p.SectionName != "" {
			ref.SectionName = ptr(gatewayv1.SectionName(p.SectionName))
		}
		parents = append(parents, ref)
	}
	var hostnames []gatewayv1.Hostname
	for _, h := range spec.Hostnames {
		hostnames = append(hostnames, gatewayv1.Hostname(h))
	}
	rule := gatewayv1.HTTPRouteRule{
		Matches: []gatewayv1.HTTPRouteMatch{{
			Path: &gatewayv1.HTTPPathMatch{Type: ptr(gatewayv1.PathMatchPathPrefix), Value: ptr(spec.Path)},
		}},
		BackendRefs: []gatewayv1.HTTPBackendRef{{BackendRef: gatewayv1.BackendRef{
			BackendObjectReference: gatewayv1.BackendObjectReference{
				Group: ptr(gatewayv1.Group("")),
				Kind:  ptr(gatewayv1.Kind("Service")),
				Name:  gatewayv1.ObjectName(m.Name),
				Port:  ptr(m.Spec.Service.Port),
			},
			Weight: ptr(int32(1)),
		}}},
	}
	if t := spec.Timeouts; t != nil && (t.Request != nil || t.BackendRequest != nil) {
		rule.Timeouts = &gatewayv1.HTTPRouteTimeouts{}
		if t.Request != nil {
			rule.Timeouts.Request = ptr(gatewayv1.Duration(*t.Request))
		}
		if t.BackendRequest != nil {
			rule.Timeouts.BackendRequest = ptr(gatewayv1.Duration(*t.BackendRequest))
		}
	}
	return &gatewayv1.HTTPRoute{
		ObjectMeta: objectMeta(m, m.Name),
		Spec: gatewayv1.HTTPRouteSpec{
			CommonRouteSpec: gatewayv1.CommonRouteSpec{ParentRefs: parents},
			Hostnames:       hostnames,
			Rules:           []gatewayv1.HTTPRouteRule{rule},
		},
	}
}
