// Package resource holds the pure side of the operator: the table of child
// kinds (Kinds) and the builders that turn a MedOpsAPI into the desired
// child objects. No client, no apiserver, so every child is checked against
// a golden file.
package resource

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/medops/medops/api/v1alpha1"
)

// Paths, ports and ids of the workload the builders agree on.
const (
	// ContainerName is the medops-api container in the pod template.
	ContainerName = "medops-api"
	// HTTPPortName names the container and Service port.
	HTTPPortName = "http"
	// ContainerPort is where medops-api listens inside the pod.
	ContainerPort = int32(8080)

	ConfigKey    = "config.yaml"
	ConfigDir    = "/etc/medops/config"
	TokenDir     = "/etc/medops/auth"
	TokenFile    = TokenDir + "/" + tokenPath
	PostgresDir  = "/etc/medops/postgres"
	PostgresFile = PostgresDir + "/" + postgresDSNPath
	// The image's own defaults (its env and the folder its layer gives 65532),
	// so a pod and a plain `docker run` of the image agree.
	DataDir        = v1alpha1.ContainerDataDir
	WorkloadListen = v1alpha1.ContainerListen

	// NonRootUID is the distroless "nonroot" user the image runs as.
	NonRootUID = int64(65532)

	// PreStopSleepSeconds keeps a terminating pod serving while endpoints
	// controllers and ingress controllers take it out of rotation.
	PreStopSleepSeconds = int64(5)

	// configHashLen is how many hex digits of the config hash are kept:
	// enough to tell configs apart, short enough to read in kubectl.
	configHashLen = 16
)

// Inputs carries what builders need beyond the MedOpsAPI.
type Inputs struct {
	TokenSecretName string // the Secret holding the bearer token ("" when auth.disabled)
}

// Desired is what every builder reads, computed once per reconcile by
// Prepare: the MedOpsAPI with the spec defaults the apiserver would apply
// (so one that never went through an apiserver builds the same children),
// its rendered workload config, and the inputs from the token Secret.
type Desired struct {
	// MedOpsAPI is a defaulted deep copy; the caller's object is untouched.
	MedOpsAPI *v1alpha1.MedOpsAPI
	Inputs    Inputs
	// Config is the rendered medops-api configuration and ConfigData its
	// file, as the ConfigMap holds it.
	Config     *v1alpha1.WorkloadConfig
	ConfigData []byte
	// ConfigHash goes on the pod template (AnnotationConfigHash) and in
	// status.configHash: it covers the config file, which a pod reads at
	// start and a Deployment does not see change. The token is not in it:
	// medops-api follows its mounted file, so a rotation needs no rollout.
	ConfigHash string
}

// Prepare defaults m and renders its config, once. An error means the spec
// cannot be built: it wraps the field error of ValidateTaskStore (several
// replicas on a one-writer claim, possible for an object stored before the
// CRD refused it) or the field.ErrorList of WorkloadConfig.Validate.
func Prepare(m *v1alpha1.MedOpsAPI, in Inputs) (*Desired, error) {
	api := m.DeepCopy()
	api.Spec.SetDefaults()
	if err := api.Spec.ValidateTaskStore(); err != nil {
		return nil, fmt.Errorf("spec cannot be built: %w", err)
	}
	w, data, err := renderConfig(api)
	if err != nil {
		return nil, err
	}
	return &Desired{MedOpsAPI: api, Inputs: in, Config: w, ConfigData: data, ConfigHash: hashConfig(data)}, nil
}

func hashConfig(config []byte) string {
	sum := sha256.Sum256(config)
	return hex.EncodeToString(sum[:])[:configHashLen]
}

// Names of the children, all derived from the MedOpsAPI's name.
func ConfigMapName(m *v1alpha1.MedOpsAPI) string   { return m.Name + "-config" }
func PVCName(m *v1alpha1.MedOpsAPI) string         { return m.Name + "-data" }
func TokenSecretName(m *v1alpha1.MedOpsAPI) string { return m.Name + "-token" }

// sameName is the name of the children named like their MedOpsAPI.
func sameName(m *v1alpha1.MedOpsAPI) string { return m.Name }

// SelectorLabels are the labels the Deployment, Service, PDB and
// NetworkPolicy select pods by. They never change for a MedOpsAPI, because
// a Deployment's selector is immutable.
func SelectorLabels(m *v1alpha1.MedOpsAPI) map[string]string {
	return map[string]string{LabelName: AppName, LabelInstance: m.Name}
}

// Labels are put on every child.
func Labels(m *v1alpha1.MedOpsAPI) map[string]string {
	l := SelectorLabels(m)
	l[LabelManagedBy] = ManagedByValue // the cache only holds labelled objects
	l[LabelPartOf] = PartOf
	return l
}

func typeMeta(apiVersion, kind string) metav1.TypeMeta {
	return metav1.TypeMeta{APIVersion: apiVersion, Kind: kind}
}

// objectMeta names a child after m and gives it the standard labels and an
// owner reference that makes it go with m.
func objectMeta(m *v1alpha1.MedOpsAPI, name string) metav1.ObjectMeta {
	return metav1.ObjectMeta{
		Name:            name,
		Namespace:       m.Namespace,
		Labels:          Labels(m),
		OwnerReferences: []metav1.OwnerReference{ownerRef(m)},
	}
}

func ownerRef(m *v1alpha1.MedOpsAPI) metav1.OwnerReference {
	return metav1.OwnerReference{
		APIVersion:         v1alpha1.GroupVersion.String(),
		Kind:               "MedOpsAPI",
		Name:               m.Name,
		UID:                m.UID,
		Controller:         ptr(true),
		BlockOwnerDeletion: ptr(true),
	}
}

func ptr[T any](v T) *T { return &v }
