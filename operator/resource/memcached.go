package resource

import (
	"maps"
	"strconv"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	apiresource "k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/medops/medops/api/v1alpha1"
)

// The shared cache tier (spec.cache.shared): with deploy: true the
// operator runs one memcached pod behind a Service, reachable only from
// this MedOpsAPI's pods (NetworkPolicy), and every pod of the API mounts
// the HMAC key Secret the operator generates (see operator/sharedcache.go).
const (
	// MemcachedImage is the official multi-arch memcached image (amd64,
	// arm64v8, arm32v6/v7 and more), pinned by tag: the release Debian
	// bookworm ships, on Alpine for a small image.
	MemcachedImage = "memcached:1.6.18-alpine"
	// MemcachedAppName is the app.kubernetes.io/name of its children, so
	// that the API's own Service, PDB and NetworkPolicy never select it.
	MemcachedAppName = "memcached"
	// MemcachedUID is the image's memcache user.
	MemcachedUID = int64(11211)
	// memcachedPortName is the Service's and the container's port name.
	memcachedPortName = "memcache"
	memcachedPort     = int32(11211)
	// memcachedHeadroom is memory above -m for connections, the hash table
	// and the process itself; the container's limit is -m plus it.
	memcachedHeadroom = 32 << 20
	// memcachedConnections bounds memcached's connections (-c): every
	// replica keeps a pool of up to 64 idle ones.
	memcachedConnections = 1024

	// HMACDir is where the pods mount the HMAC key Secret, HMACFile the key.
	HMACDir  = "/etc/medops/shared-cache"
	HMACFile = HMACDir + "/" + hmacPath
	hmacPath = "hmac-key"
	volHMAC  = "shared-cache-hmac"
	// HMACSecretKey is the key of the generated Secret that holds it.
	HMACSecretKey = "hmac-key"
)

// MemcachedName is the name of the memcached Deployment, Service and
// NetworkPolicy.
func MemcachedName(m *v1alpha1.MedOpsAPI) string { return m.Name + "-memcached" }

// HMACSecretName is the Secret with the key that signs shared cache entries.
func HMACSecretName(m *v1alpha1.MedOpsAPI) string { return m.Name + "-cache-hmac" }

// memcachedAddress is the deployed memcached's Service, as the workload's
// cache.shared.memcached.addresses names it.
func memcachedAddress(m *v1alpha1.MedOpsAPI) string {
	host := MemcachedName(m)
	if m.Namespace != "" { // always in a cluster; a bare name resolves in the pod's own
		host += "." + m.Namespace + ".svc"
	}
	return host + ":" + strconv.Itoa(int(memcachedPort))
}

// memcachedSelector selects the memcached pod of m.
func memcachedSelector(m *v1alpha1.MedOpsAPI) map[string]string {
	return map[string]string{LabelName: MemcachedAppName, LabelInstance: m.Name}
}

func memcachedMeta(m *v1alpha1.MedOpsAPI) metav1.ObjectMeta {
	l := memcachedSelector(m)
	l[LabelManagedBy] = ManagedByValue
	l[LabelPartOf] = PartOf
	return objectMetaLabels(m, MemcachedName(m), l)
}

// BuildMemcachedDeployment runs one memcached with -m from
// spec.cache.shared.size, under the restricted Pod Security settings: the
// image's own non-root user, a read-only root filesystem (memcached writes
// nothing), no capabilities, the runtime's seccomp profile. One replica:
// the tier is a cache that may be lost at any time, and the API's
// back-off keeps serving without it while it restarts.
func BuildMemcachedDeployment(d *Desired) *appsv1.Deployment {
	m := d.MedOpsAPI
	s := m.Spec.Cache.Shared
	size := apiresource.MustParse(v1alpha1.DefaultSharedCacheSize)
	if s != nil && s.Size != nil {
		size = s.Size.DeepCopy()
	}
	mib := max(size.Value()>>20, 1)
	mem := apiresource.NewQuantity(mib<<20+memcachedHeadroom, apiresource.BinarySI)
	om := memcachedMeta(m)
	tpl := corev1.PodTemplateSpec{
		ObjectMeta: metav1.ObjectMeta{Labels: om.Labels},
		Spec: corev1.PodSpec{
			AutomountServiceAccountToken:  ptr(false),
			EnableServiceLinks:            ptr(false),
			TerminationGracePeriodSeconds: ptr(int64(10)),
			RestartPolicy:                 corev1.RestartPolicyAlways,
			DNSPolicy:                     corev1.DNSClusterFirst,
			SecurityContext: &corev1.PodSecurityContext{
				RunAsNonRoot:   ptr(true),
				RunAsUser:      ptr(MemcachedUID),
				RunAsGroup:     ptr(MemcachedUID),
				SeccompProfile: &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeRuntimeDefault},
			},
			Containers: []corev1.Container{{
				Name:            MemcachedAppName,
				Image:           MemcachedImage,
				ImagePullPolicy: corev1.PullIfNotPresent,
				Args: []string{
					"-m", strconv.FormatInt(mib, 10),
					"-c", strconv.Itoa(memcachedConnections),
					"-p", strconv.Itoa(int(memcachedPort)),
					"-U", "0", // no UDP: it amplifies, and the client uses TCP
				},
				Ports: []corev1.ContainerPort{{Name: memcachedPortName, ContainerPort: memcachedPort, Protocol: corev1.ProtocolTCP}},
				Resources: corev1.ResourceRequirements{
					Requests: corev1.ResourceList{corev1.ResourceMemory: *mem, corev1.ResourceCPU: apiresource.MustParse("50m")},
					Limits:   corev1.ResourceList{corev1.ResourceMemory: *mem},
				},
				ReadinessProbe: &corev1.Probe{
					ProbeHandler:     corev1.ProbeHandler{TCPSocket: &corev1.TCPSocketAction{Port: intstr.FromString(memcachedPortName)}},
					TimeoutSeconds:   1,
					PeriodSeconds:    5,
					SuccessThreshold: 1,
					FailureThreshold: 2,
				},
				LivenessProbe: &corev1.Probe{
					ProbeHandler:     corev1.ProbeHandler{TCPSocket: &corev1.TCPSocketAction{Port: intstr.FromString(memcachedPortName)}},
					TimeoutSeconds:   1,
					PeriodSeconds:    10,
					SuccessThreshold: 1,
					FailureThreshold: 3,
				},
				SecurityContext:          restrictedContainer(),
				TerminationMessagePath:   corev1.TerminationMessagePathDefault,
				TerminationMessagePolicy: corev1.TerminationMessageReadFile,
			}},
			// Where the API may run, memcached may too (a tainted Pi
			// pool); the image serves every architecture.
			NodeSelector: nilIfEmpty(maps.Clone(m.Spec.NodeSelector)),
			Tolerations:  m.Spec.Tolerations,
		},
	}
	return &appsv1.Deployment{
		ObjectMeta: om,
		Spec: appsv1.DeploymentSpec{
			Replicas:             ptr(int32(1)),
			RevisionHistoryLimit: ptr(revisionHistoryLimit),
			Selector:             &metav1.LabelSelector{MatchLabels: memcachedSelector(m)},
			// One pod with a fixed memory budget: replace it rather than
			// run two for a while.
			Strategy: appsv1.DeploymentStrategy{Type: appsv1.RecreateDeploymentStrategyType},
			Template: tpl,
		},
	}
}

// BuildMemcachedService is the ClusterIP Service the workload's
// cache.shared.memcached.addresses names.
func BuildMemcachedService(d *Desired) *corev1.Service {
	m := d.MedOpsAPI
	return &corev1.Service{
		ObjectMeta: memcachedMeta(m),
		Spec: corev1.ServiceSpec{
			Type:     corev1.ServiceTypeClusterIP,
			Selector: memcachedSelector(m),
			Ports: []corev1.ServicePort{{
				Name: memcachedPortName, Port: memcachedPort, TargetPort: intstr.FromString(memcachedPortName), Protocol: corev1.ProtocolTCP,
			}},
		},
	}
}

// BuildMemcachedNetworkPolicy lets only this MedOpsAPI's pods reach its
// memcached: memcached has no authentication, and whoever can write to it
// can at least make the API call its upstreams again (the HMAC keeps them
// from doing more).
func BuildMemcachedNetworkPolicy(d *Desired) *networkingv1.NetworkPolicy {
	m := d.MedOpsAPI
	return &networkingv1.NetworkPolicy{
		ObjectMeta: memcachedMeta(m),
		Spec: networkingv1.NetworkPolicySpec{
			PodSelector: metav1.LabelSelector{MatchLabels: memcachedSelector(m)},
			PolicyTypes: []networkingv1.PolicyType{networkingv1.PolicyTypeIngress},
			Ingress: []networkingv1.NetworkPolicyIngressRule{{
				Ports: []networkingv1.NetworkPolicyPort{{
					Protocol: ptr(corev1.ProtocolTCP),
					Port:     ptr(intstr.FromString(memcachedPortName)),
				}},
				From: []networkingv1.NetworkPolicyPeer{{PodSelector: &metav1.LabelSelector{MatchLabels: SelectorLabels(m)}}},
			}},
		},
	}
}

// BuildHMACSecret returns the Secret with the shared cache's HMAC key.
// Like the token Secret it is not in Kinds: it is made once and never
// rewritten (a new key would only turn every entry into a miss). With a
// nil key only its identity is filled.
func BuildHMACSecret(m *v1alpha1.MedOpsAPI, key []byte) *corev1.Secret {
	return generatedSecret(m, HMACSecretName(m), HMACSecretKey, key)
}

// hmacVolume projects the HMAC key into the API's pods.
func hmacVolume(m *v1alpha1.MedOpsAPI) corev1.Volume {
	return corev1.Volume{Name: volHMAC, VolumeSource: corev1.VolumeSource{Secret: &corev1.SecretVolumeSource{
		SecretName:  HMACSecretName(m),
		Items:       []corev1.KeyToPath{{Key: HMACSecretKey, Path: hmacPath}},
		DefaultMode: ptr(secretFileMode),
	}}}
}

// regionEnv passes the node's region to medops-api, which prefers mirrors
// there. The label is on the pod when the apiserver copies node topology
// labels at binding; without it the variable is empty: no region.
func regionEnv() corev1.EnvVar {
	return corev1.EnvVar{Name: v1alpha1.EnvRegion, ValueFrom: &corev1.EnvVarSource{
		FieldRef: &corev1.ObjectFieldSelector{APIVersion: "v1", FieldPath: "metadata.labels['" + LabelRegion + "']"},
	}}
}

func nilIfEmpty(m map[string]string) map[string]string {
	if len(m) == 0 {
		return nil
	}
	return m
}
