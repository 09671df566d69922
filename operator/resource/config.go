package resource

import (
	"fmt"
	"strings"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/yaml"

	"github.com/medops/medops/api/v1alpha1"
)

// renderConfig renders the medops-api configuration file for the defaulted
// m: the shared WorkloadConfig with the in-cluster listen address, data
// folder, token file and (with storage.postgres) connection string file,
// every default spelled out. Neither the token nor the connection string
// goes into the file: the pod reads them from the Secrets mounted at
// TokenFile and PostgresFile. An invalid result is an error wrapping the field errors of
// WorkloadConfig.Validate, which the reconciler reports in the MedOpsAPI's
// status.
func renderConfig(m *v1alpha1.MedOpsAPI) (*v1alpha1.WorkloadConfig, []byte, error) {
	w := &v1alpha1.WorkloadConfig{
		Listen:   WorkloadListen,
		DataDir:  DataDir,
		LogLevel: m.Spec.LogLevel,
		Modules:  *m.Spec.Modules.DeepCopy(),
		Cache:    *m.Spec.Cache.DeepCopy(),
	}
	w.Server.Docs = *m.Spec.Docs.DeepCopy()
	if m.Spec.IngressEnabled() {
		// The Ingress forwards its path unchanged: medops-api must serve
		// the API under it, or every URL of status.url is a 404.
		w.Server.BasePath = strings.TrimSuffix(m.Spec.Ingress.Path, "/")
	}
	if ing := m.Spec.Ingress; ing != nil && ing.ProxyBodySize != nil {
		q := ing.ProxyBodySize.DeepCopy()
		w.Server.MaxBodySize = &q
	}
	if m.Spec.TaskStore() == v1alpha1.TaskStorePostgres {
		// The path of the mounted Secret key, never the connection string.
		w.Postgres = &v1alpha1.WorkloadPostgres{DSNFile: PostgresFile}
	}
	if m.Spec.Auth.Disabled {
		w.Auth.Disabled = true
	} else {
		w.Auth.TokenFile = TokenFile
	}
	if recreates(&m.Spec) {
		// The shutdown delay lets load balancers move to the other pods;
		// a pod that is recreated has none, and its successor starts only
		// once it is gone, so the delay would only lengthen the gap.
		w.Server.ShutdownDelay = &metav1.Duration{}
	}
	if sh := w.Cache.Shared; sh != nil {
		// The workload only knows addresses: deploy: true becomes the
		// Service of the memcached the operator runs.
		if sh.Deploy {
			sh.Deploy = false
			sh.Memcached = &v1alpha1.MemcachedTier{Addresses: []string{memcachedAddress(m)}}
		}
		// Keys per MedOpsAPI, so that APIs sharing one memcached never
		// read each other's entries or budgets; the HMAC key from the
		// Secret the operator generates, mounted at HMACFile.
		w.SharedCache = &v1alpha1.WorkloadSharedCache{KeyNamespace: m.Namespace + "/" + m.Name, HMACKeyFile: HMACFile}
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
func BuildConfigMap(d *Desired) *corev1.ConfigMap {
	m := d.MedOpsAPI
	return &corev1.ConfigMap{
		ObjectMeta: objectMeta(m, ConfigMapName(m)),
		Data:       map[string]string{ConfigKey: string(d.ConfigData)},
	}
}

// BuildTokenSecret returns the Secret the operator generates when
// auth.tokenSecretRef is unset. With a nil token only its identity (name,
// labels, owner) is filled, which is what the reconciler needs to look it
// up. It is not in Kinds: it is made once and never rewritten, and it is
// needed before Prepare (its data's hash is one of the Inputs).
func BuildTokenSecret(m *v1alpha1.MedOpsAPI, token []byte) *corev1.Secret {
	return generatedSecret(m, TokenSecretName(m), v1alpha1.DefaultTokenKey, token)
}

// generatedSecret is a Secret the operator generates, holding data under
// key; with nil data only its identity.
func generatedSecret(m *v1alpha1.MedOpsAPI, name, key string, data []byte) *corev1.Secret {
	s := &corev1.Secret{
		TypeMeta:   typeMeta("v1", "Secret"),
		ObjectMeta: objectMeta(m, name),
		Type:       corev1.SecretTypeOpaque,
	}
	if data != nil {
		s.Data = map[string][]byte{key: data}
	}
	return s
}
