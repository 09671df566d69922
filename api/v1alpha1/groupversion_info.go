// Package v1alpha1 holds the MedOpsAPI API types of the medops.io group, and
// the configuration schema of the medops-api workload that both the operator
// and the workload use.
// +kubebuilder:object:generate=true
// +groupName=medops.io
package v1alpha1

import (
	"k8s.io/apimachinery/pkg/runtime/schema"
	"sigs.k8s.io/controller-runtime/pkg/scheme"
)

var (
	// GroupVersion is the group and version of the MedOpsAPI types.
	GroupVersion = schema.GroupVersion{Group: "medops.io", Version: "v1alpha1"}

	// SchemeBuilder registers the types with a runtime.Scheme.
	SchemeBuilder = &scheme.Builder{GroupVersion: GroupVersion}

	// AddToScheme adds the types of this group-version to a scheme.
	AddToScheme = SchemeBuilder.AddToScheme
)
