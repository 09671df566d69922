package resource

import (
	"maps"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apiresource "k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/medops/medops/api/v1alpha1"
)

// Volume names in the pod template.
const (
	volTmp      = "tmp"
	volConfig   = "config"
	volToken    = "token"
	volData     = "data"
	volPostgres = "postgres"
)

// Numbers of the pod template, named.
const (
	// revisionHistoryLimit is how many old ReplicaSets a Deployment keeps
	// for `kubectl rollout undo`.
	revisionHistoryLimit = int32(5)
	// exitGraceSeconds is added to the pod's shutdown time for the process
	// to exit after its last request.
	exitGraceSeconds = int64(5)

	probeTimeoutSeconds       = int32(1)
	livenessPeriodSeconds     = int32(10)
	livenessFailureThreshold  = int32(3)
	readinessPeriodSeconds    = int32(5)
	readinessFailureThreshold = int32(2)
	// The startup probe asks /healthz every second until the process
	// answers. Its success makes the kubelet probe readiness at once, so a
	// new pod turns Ready as soon as it serves instead of at the next
	// readiness period (up to 5 s later: with Recreate, 5 s more of a
	// rollout with no pod). Liveness waits for it, so its window must not
	// be shorter than what liveness gave a starting pod before (3 failures
	// 10 s apart): a minute, for slow or emulated arm64 nodes.
	startupPeriodSeconds    = int32(1)
	startupFailureThreshold = int32(60)

	// tmpSizeLimit bounds the writable /tmp of the read-only root
	// filesystem; medops-api writes next to nothing there.
	tmpSizeLimit = "64Mi"
	tmpDir       = "/tmp"

	// Ephemeral storage (a Raspberry Pi's SD card is small): the kubelet
	// counts emptyDirs, container logs and the writable layer against the
	// container's limit and evicts the pod before the node's disk fills.
	// ephemeralRequest is what the scheduler reserves for /tmp and logs;
	// the limit is the emptyDirs' own size limits plus logHeadroom.
	ephemeralRequest = "64Mi"
	logHeadroom      = "128Mi"

	// tokenPath is the token's file name in the mounted Secret volume.
	tokenPath = "token"
	// postgresDSNPath is the connection string's file name in the mounted
	// postgres Secret volume.
	postgresDSNPath = "dsn"
	// configFileMode and secretFileMode are the mounted files' modes: the
	// config is world-readable, the token and the connection string
	// readable by the pod's group (fsGroup) only.
	configFileMode = int32(0o444)
	secretFileMode = int32(0o440)
)

// BuildDeployment returns the Deployment running medops-api. The pod
// template carries the config hash, so a new config or token rolls the pods.
func BuildDeployment(d *Desired) *appsv1.Deployment {
	m := d.MedOpsAPI
	s := &m.Spec

	dep := &appsv1.Deployment{
		ObjectMeta: objectMeta(m, m.Name),
		Spec: appsv1.DeploymentSpec{
			Selector:             &metav1.LabelSelector{MatchLabels: SelectorLabels(m)},
			RevisionHistoryLimit: ptr(revisionHistoryLimit),
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{
					Labels:      podLabels(m),
					Annotations: podAnnotations(m, d.ConfigHash),
				},
				Spec: podSpec(d),
			},
		},
	}
	// With autoscaling the HPA owns the replica count: writing it here
	// would undo every scaling decision on the next reconcile. The
	// reconciler hands the field over before the first apply without it
	// (apply.HandOver), so the running count is kept, not reset to 1.
	if s.Autoscaling == nil {
		dep.Spec.Replicas = ptr(*s.Replicas)
	}
	if recreates(s) {
		dep.Spec.Strategy = appsv1.DeploymentStrategy{Type: appsv1.RecreateDeploymentStrategyType}
	} else {
		// Never go below the wanted count during a rollout.
		dep.Spec.Strategy = appsv1.DeploymentStrategy{
			Type: appsv1.RollingUpdateDeploymentStrategyType,
			RollingUpdate: &appsv1.RollingUpdateDeployment{
				MaxUnavailable: ptr(intstr.FromInt32(0)),
				MaxSurge:       ptr(intstr.FromInt32(1)),
			},
		}
	}
	return dep
}

// recreates reports whether the Deployment replaces its pods with the
// Recreate strategy: a ReadWriteOnce claim and bbolt's file lock allow one
// pod at a time, so the old pod must be gone before the new one starts (a
// surge pod on another node could never attach the claim, and a rolling
// update would wait for it forever). The rendered config follows it too
// (renderConfig): such a pod has no peer to drain to.
func recreates(s *v1alpha1.MedOpsAPISpec) bool { return s.PersistentStorage() }

// preStopSeconds is the pod's preStop sleep: PreStopSleepSeconds where
// other pods take the traffic it keeps serving while ingress controllers
// drop it, none with Recreate. There its new pod is not even created until
// it has exited, so each second of sleep is a second more with no pod; the
// requests a sleep would serve (until the ingress controller drops the
// endpoint, 2 s at most with Traefik's default throttle) fail either way
// once it ends. Measured in the e2e's rollout timeline (docs/e2e.md).
func preStopSeconds(s *v1alpha1.MedOpsAPISpec) int64 {
	if recreates(s) {
		return 0
	}
	return PreStopSleepSeconds
}

// podLabels are the user's pod labels with the operator's labels on top, so
// that a user label can never take a pod out of its Deployment's selector.
func podLabels(m *v1alpha1.MedOpsAPI) map[string]string {
	l := map[string]string{}
	maps.Copy(l, m.Spec.PodLabels)
	maps.Copy(l, Labels(m))
	return l
}

func podAnnotations(m *v1alpha1.MedOpsAPI, hash string) map[string]string {
	a := map[string]string{}
	maps.Copy(a, m.Spec.PodAnnotations)
	a[AnnotationConfigHash] = hash
	return a
}

func podSpec(d *Desired) corev1.PodSpec {
	m, w := d.MedOpsAPI, d.Config
	s := &m.Spec
	// The pod must outlive the preStop sleep, the workload's own not-ready
	// delay and its in-flight request deadline, or the kubelet kills it
	// mid-request; exitGraceSeconds more cover process exit.
	grace := preStopSeconds(s) + int64(w.Server.ShutdownDelay.Seconds()) + int64(w.Server.ShutdownTimeout.Seconds()) + exitGraceSeconds

	ps := corev1.PodSpec{
		ServiceAccountName:           m.Name,
		AutomountServiceAccountToken: ptr(false),
		// Service environment variables are noise for medops-api and grow
		// with the namespace.
		EnableServiceLinks:            ptr(false),
		TerminationGracePeriodSeconds: ptr(grace),
		RestartPolicy:                 corev1.RestartPolicyAlways,
		DNSPolicy:                     corev1.DNSClusterFirst,
		// The token and the data volume must be readable (writable) by
		// the non-root user: group ownership through fsGroup.
		SecurityContext:           restrictedPod(),
		InitContainers:            restoreInitContainers(d),
		Containers:                []corev1.Container{container(m)},
		Volumes:                   append(volumes(m, d.Inputs), restoreVolumes(s)...),
		NodeSelector:              maps.Clone(s.NodeSelector),
		Tolerations:               s.Tolerations,
		Affinity:                  affinity(s),
		TopologySpreadConstraints: spreadConstraints(m),
		ImagePullSecrets:          s.ImagePullSecrets,
	}
	if len(ps.NodeSelector) == 0 {
		ps.NodeSelector = nil
	}
	return ps
}

func container(m *v1alpha1.MedOpsAPI) corev1.Container {
	s := &m.Spec
	probe := func(path string, period, failures int32) *corev1.Probe {
		return &corev1.Probe{
			ProbeHandler: corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{
				Path: path, Port: intstr.FromString(HTTPPortName), Scheme: corev1.URISchemeHTTP,
			}},
			TimeoutSeconds:   probeTimeoutSeconds,
			PeriodSeconds:    period,
			SuccessThreshold: 1,
			FailureThreshold: failures,
		}
	}
	c := corev1.Container{
		Name:            ContainerName,
		Image:           s.Image,
		ImagePullPolicy: s.ImagePullPolicy,
		Args:            []string{"--config", ConfigDir + "/" + ConfigKey},
		Ports: []corev1.ContainerPort{{
			Name: HTTPPortName, ContainerPort: ContainerPort, Protocol: corev1.ProtocolTCP,
		}},
		Env:             append([]corev1.EnvVar{memoryLimitEnv(), regionEnv()}, s.Env...),
		Resources:       resources(s),
		StartupProbe:    probe("/healthz", startupPeriodSeconds, startupFailureThreshold),
		LivenessProbe:   probe("/healthz", livenessPeriodSeconds, livenessFailureThreshold),
		ReadinessProbe:  probe("/readyz", readinessPeriodSeconds, readinessFailureThreshold),
		SecurityContext: restrictedContainer(),
		VolumeMounts: []corev1.VolumeMount{
			{Name: volTmp, MountPath: tmpDir},
			{Name: volConfig, MountPath: ConfigDir, ReadOnly: true},
		},
	}
	if sec := preStopSeconds(s); sec > 0 {
		// A distroless image has no shell: the kubelet's sleep handler
		// keeps the pod serving while it leaves the endpoints.
		c.Lifecycle = &corev1.Lifecycle{PreStop: &corev1.LifecycleHandler{
			Sleep: &corev1.SleepAction{Seconds: sec},
		}}
	}
	switch s.TaskStore() {
	case v1alpha1.TaskStoreClaim, v1alpha1.TaskStoreEphemeral:
		c.VolumeMounts = append(c.VolumeMounts, corev1.VolumeMount{Name: volData, MountPath: DataDir})
	case v1alpha1.TaskStorePostgres:
		// No subPath: the kubelet then updates the file in place when the
		// Secret changes, and medops-api reads it for every new connection.
		c.VolumeMounts = append(c.VolumeMounts, corev1.VolumeMount{Name: volPostgres, MountPath: PostgresDir, ReadOnly: true})
	}
	if !s.Auth.Disabled {
		c.VolumeMounts = append(c.VolumeMounts, corev1.VolumeMount{Name: volToken, MountPath: TokenDir, ReadOnly: true})
	}
	if s.Cache.Shared != nil {
		c.VolumeMounts = append(c.VolumeMounts, corev1.VolumeMount{Name: volHMAC, MountPath: HMACDir, ReadOnly: true})
	}
	return c
}

// memoryLimitEnv tells medops-api its container's memory limit, from which
// it sets the Go runtime's soft limit with headroom. It comes first, so that
// the user's env can override it (the last of two equal names wins).
func memoryLimitEnv() corev1.EnvVar {
	return corev1.EnvVar{Name: v1alpha1.EnvMemoryLimit, ValueFrom: &corev1.EnvVarSource{
		// Divisor 1 (bytes) spelled out, as the apiserver defaults it, so
		// the applied object matches what is read back.
		ResourceFieldRef: &corev1.ResourceFieldSelector{ContainerName: ContainerName, Resource: "limits.memory",
			Divisor: apiresource.MustParse("1")},
	}}
}

func volumes(m *v1alpha1.MedOpsAPI, in Inputs) []corev1.Volume {
	s := &m.Spec
	v := []corev1.Volume{
		tmpVolume(),
		{Name: volConfig, VolumeSource: corev1.VolumeSource{ConfigMap: &corev1.ConfigMapVolumeSource{
			LocalObjectReference: corev1.LocalObjectReference{Name: ConfigMapName(m)},
			DefaultMode:          ptr(configFileMode),
		}}},
	}
	// No volume for a store that is not there: without the tasks module,
	// or with PostgreSQL, nothing writes under DataDir.
	switch s.TaskStore() {
	case v1alpha1.TaskStoreClaim:
		v = append(v, corev1.Volume{Name: volData, VolumeSource: corev1.VolumeSource{
			PersistentVolumeClaim: &corev1.PersistentVolumeClaimVolumeSource{ClaimName: PVCName(m)},
		}})
	case v1alpha1.TaskStoreEphemeral:
		v = append(v, corev1.Volume{Name: volData, VolumeSource: corev1.VolumeSource{
			EmptyDir: &corev1.EmptyDirVolumeSource{SizeLimit: ptr(dataEmptyDirSize(s))},
		}})
	case v1alpha1.TaskStorePostgres:
		// Only the one key is projected, so the Secret's other keys (a
		// CloudNativePG app Secret also holds the bare password, a pgpass
		// line and a JDBC URL) never reach the pod.
		ref := s.Storage.Postgres.SecretRef
		v = append(v, corev1.Volume{Name: volPostgres, VolumeSource: corev1.VolumeSource{Secret: &corev1.SecretVolumeSource{
			SecretName:  ref.Name,
			Items:       []corev1.KeyToPath{{Key: ref.Key, Path: postgresDSNPath}},
			DefaultMode: ptr(secretFileMode),
		}}})
	}
	if !s.Auth.Disabled {
		v = append(v, tokenVolume(m, in))
	}
	if s.Cache.Shared != nil {
		v = append(v, hmacVolume(m))
	}
	return v
}

// tmpVolume is the writable /tmp of the read-only root filesystem.
func tmpVolume() corev1.Volume {
	return corev1.Volume{Name: volTmp, VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{
		SizeLimit: ptr(apiresource.MustParse(tmpSizeLimit)),
	}}}
}

// tokenVolume projects the one token key of the token Secret (the
// workload's and the backup Job's).
func tokenVolume(m *v1alpha1.MedOpsAPI, in Inputs) corev1.Volume {
	name, key := in.TokenSecretName, v1alpha1.DefaultTokenKey
	if ref := m.Spec.Auth.TokenSecretRef; ref != nil {
		if name == "" {
			name = ref.Name
		}
		key = ref.Key
	}
	if name == "" {
		name = TokenSecretName(m)
	}
	return corev1.Volume{Name: volToken, VolumeSource: corev1.VolumeSource{Secret: &corev1.SecretVolumeSource{
		SecretName:  name,
		Items:       []corev1.KeyToPath{{Key: key, Path: tokenPath}},
		DefaultMode: ptr(secretFileMode),
	}}}
}

// dataEmptyDirSize is the size limit of the task store's emptyDir when it
// has no claim: storage.size, or the default storage size without a
// storage section, so that the store can never fill the node's disk.
func dataEmptyDirSize(s *v1alpha1.MedOpsAPISpec) apiresource.Quantity {
	if s.Storage != nil && s.Storage.Size != nil {
		return s.Storage.Size.DeepCopy()
	}
	return apiresource.MustParse(v1alpha1.DefaultStorageSize)
}

// resources are the user's container resources with ephemeral storage
// filled in where the user named none: a request for /tmp and logs, and a
// limit that holds /tmp, the task store's emptyDir (none with a claim) and
// logHeadroom, so that only a runaway writer is evicted.
func resources(s *v1alpha1.MedOpsAPISpec) corev1.ResourceRequirements {
	r := *s.Resources.DeepCopy()
	if _, set := r.Requests[corev1.ResourceEphemeralStorage]; !set {
		if r.Requests == nil {
			r.Requests = corev1.ResourceList{}
		}
		r.Requests[corev1.ResourceEphemeralStorage] = apiresource.MustParse(ephemeralRequest)
	}
	if _, set := r.Limits[corev1.ResourceEphemeralStorage]; !set {
		limit := apiresource.MustParse(tmpSizeLimit)
		limit.Add(apiresource.MustParse(logHeadroom))
		if s.TaskStore() == v1alpha1.TaskStoreEphemeral {
			limit.Add(dataEmptyDirSize(s))
		}
		if r.Limits == nil {
			r.Limits = corev1.ResourceList{}
		}
		r.Limits[corev1.ResourceEphemeralStorage] = limit
	}
	return r
}

// affinity merges the architectures into the user's affinity. Node selector
// terms are ORed and the expressions within one term ANDed, so the arch
// requirement is added to every term: a pod then needs a matching
// architecture and one of the user's terms.
func affinity(s *v1alpha1.MedOpsAPISpec) *corev1.Affinity {
	a := s.Affinity.DeepCopy()
	if len(s.Architectures) == 0 {
		return a
	}
	arches := make([]string, len(s.Architectures))
	for i, arch := range s.Architectures {
		arches[i] = string(arch)
	}
	req := corev1.NodeSelectorRequirement{Key: LabelArch, Operator: corev1.NodeSelectorOpIn, Values: arches}
	if a == nil {
		a = &corev1.Affinity{}
	}
	if a.NodeAffinity == nil {
		a.NodeAffinity = &corev1.NodeAffinity{}
	}
	if a.NodeAffinity.RequiredDuringSchedulingIgnoredDuringExecution == nil {
		a.NodeAffinity.RequiredDuringSchedulingIgnoredDuringExecution = &corev1.NodeSelector{}
	}
	ns := a.NodeAffinity.RequiredDuringSchedulingIgnoredDuringExecution
	if len(ns.NodeSelectorTerms) == 0 {
		ns.NodeSelectorTerms = []corev1.NodeSelectorTerm{{}}
	}
	for i := range ns.NodeSelectorTerms {
		ns.NodeSelectorTerms[i].MatchExpressions = append(ns.NodeSelectorTerms[i].MatchExpressions, req)
	}
	return a
}

// spreadConstraints copies the user's constraints; one without a label
// selector would count every pod of the namespace, so it gets this
// MedOpsAPI's selector.
func spreadConstraints(m *v1alpha1.MedOpsAPI) []corev1.TopologySpreadConstraint {
	if len(m.Spec.TopologySpreadConstraints) == 0 {
		return nil
	}
	out := make([]corev1.TopologySpreadConstraint, len(m.Spec.TopologySpreadConstraints))
	for i, c := range m.Spec.TopologySpreadConstraints {
		c.DeepCopyInto(&out[i])
		if out[i].LabelSelector == nil {
			out[i].LabelSelector = &metav1.LabelSelector{MatchLabels: SelectorLabels(m)}
		}
	}
	return out
}
