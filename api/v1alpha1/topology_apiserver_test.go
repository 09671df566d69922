package v1alpha1_test

import (
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/medops/medops/api/v1alpha1"
)

// TestPodTopologyLabels checks what the pinned kube-apiserver does with a
// node's topology.kubernetes.io/region when a pod is bound to that node:
// the operator hands the pod's label to medops-api as MEDOPS_REGION (the
// downward API reads pod labels, never node labels), so the gateway's
// region preference works only where the apiserver copies it. Kubernetes
// 1.35 made the PodTopologyLabels admission plugin beta and on by default;
// this test pins that our v1.37 control plane does it, both for a binding
// (what the scheduler sends) and for a pod created with spec.nodeName.
func TestPodTopologyLabels(t *testing.T) {
	const region, zone = "eu-test-1", "eu-test-1a"
	ctx := ctxT(t)
	node := &corev1.Node{ObjectMeta: metav1.ObjectMeta{GenerateName: "region-node-", Labels: map[string]string{
		corev1.LabelTopologyRegion: region, corev1.LabelTopologyZone: zone,
	}}}
	if err := k8s.Create(ctx, node); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = k8s.Delete(ctx, node) })
	ns := createNamespace(t, "topology")
	newPod := func(name, nodeName string) *corev1.Pod {
		return &corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns},
			Spec: corev1.PodSpec{NodeName: nodeName, AutomountServiceAccountToken: new(bool),
				Containers: []corev1.Container{{Name: "c", Image: "registry.example/medops-api:test"}}},
		}
	}

	bound := newPod("bound", "")
	if err := k8s.Create(ctx, bound); err != nil {
		t.Fatal(err)
	}
	binding := &corev1.Binding{ObjectMeta: metav1.ObjectMeta{Name: bound.Name, Namespace: ns},
		Target: corev1.ObjectReference{Kind: "Node", Name: node.Name}}
	if err := k8s.SubResource("binding").Create(ctx, bound, binding); err != nil {
		t.Fatal(err)
	}
	direct := newPod("direct", node.Name)
	if err := k8s.Create(ctx, direct); err != nil {
		t.Fatal(err)
	}
	unbound := newPod("unbound", "")
	if err := k8s.Create(ctx, unbound); err != nil {
		t.Fatal(err)
	}

	for _, tc := range []struct {
		pod        *corev1.Pod
		wantRegion string
	}{{bound, region}, {direct, region}, {unbound, ""}} {
		var got corev1.Pod
		if err := k8s.Get(ctx, client.ObjectKeyFromObject(tc.pod), &got); err != nil {
			t.Fatal(err)
		}
		if r := got.Labels[corev1.LabelTopologyRegion]; r != tc.wantRegion {
			t.Errorf("pod %s: label %s = %q, want %q (labels %v)", got.Name, corev1.LabelTopologyRegion, r, tc.wantRegion, got.Labels)
		}
		if tc.wantRegion != "" && got.Labels[corev1.LabelTopologyZone] != zone {
			t.Errorf("pod %s: zone label %q, want %q", got.Name, got.Labels[corev1.LabelTopologyZone], zone)
		}
	}
	_ = v1alpha1.EnvRegion // the variable the operator fills from this label
}
