package operator

import (
	"fmt"

	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/yaml"

	"github.com/medops/medops/api/v1alpha1"
)

// RenderConfig renders the medops-api configuration file for m: the shared
// WorkloadConfig with the in-cluster listen address, data folder and token
// file, every default spelled out. The token itself never goes into the
// file: the pod reads it from the Secret mounted at TokenFile. An invalid
// result is an error wrapping the field errors of WorkloadConfig.Validate,
// which the reconciler reports in the MedOpsAPI's status.
func RenderConfig(m *v1alpha1.MedOpsAPI) (*v1alpha1.WorkloadConfig, []byte, error) {
	d := defaulted(m)
	w := &v1alpha1.WorkloadConfig{
		Listen:   WorkloadListen,
		DataDir:  DataDir,
		LogLevel: d.Spec.LogLevel,
		Modules:  *d.Spec.Modules.DeepCopy(),
		Cache:    *d.Spec.Cache.DeepCopy(),
	}
	if in := d.Spec.Ingress; in != nil && in.ProxyBodySize != nil {
		q := in.ProxyBodySize.DeepCopy()
		w.Server.MaxBodySize = &q
	}
	if d.Spec.Auth.Disabled {
		w.Auth.Disabled = true
	} else {
		w.Auth.TokenFile = TokenFile
	}
	w.SetDefaults()
	if errs := w.Validate(); len(errs) > 0 {
		return nil, nil, fmt.Errorf("spec renders an invalid medops-api config: %w", errs.ToAggregate())
	}
	data, err := yaml.Marshal(w)
	if err != nil {
		return nil, nil, fmt.Errorf("marshal medops-api config: %w", err)
	}
	return w, data, nil
}

// BuildConfigMap returns the ConfigMap holding the rendered config file.
func BuildConfigMap(m *v1alpha1.MedOpsAPI) (*corev1.ConfigMap, error) {
	_, data, err := RenderConfig(m)
	if err != nil {
		return nil, err
	}
	return &corev1.ConfigMap{
		TypeMeta:   typeMeta("v1", "ConfigMap"),
		ObjectMeta: objectMeta(m, ConfigMapName(m)),
		Data:       map[string]string{ConfigKey: string(data)},
	}, nil
}

// BuildTokenSecret returns the Secret the operator generates when
// auth.tokenSecretRef is unset. With a nil token only its identity (name,
// labels, owner) is filled, which is what the reconciler needs to look it up.
func BuildTokenSecret(m *v1alpha1.MedOpsAPI, token []byte) *corev1.Secret {
	s := &corev1.Secret{
		TypeMeta:   typeMeta("v1", "Secret"),
		ObjectMeta: objectMeta(m, TokenSecretName(m)),
		Type:       corev1.SecretTypeOpaque,
	}
	if token != nil {
		s.Data = map[string][]byte{v1alpha1.DefaultTokenKey: token}
	}
	return s
}
