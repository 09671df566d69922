package resource

import (
	"fmt"
	"maps"
	"strconv"

	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	apiresource "k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/medops/medops/api/v1alpha1"
)

// Names, labels and numbers of the backup CronJob and the restore init
// container.
const (
	// BackupContainerName is the container of a backup Job's pod, whose
	// terminated message the operator reads.
	BackupContainerName = "backup"
	// RestoreContainerName is the workload pod's init container.
	RestoreContainerName = "restore"

	// ComponentBackup is the app.kubernetes.io/component of the backup
	// CronJob, its Jobs and their pods.
	LabelComponent  = "app.kubernetes.io/component"
	ComponentBackup = "backup"
	// BackupAppName is the app.kubernetes.io/name of the backup pods: not
	// medops-api, or the Service, the PDB and the NetworkPolicy, which
	// select the API's pods by name and instance, would take them in.
	BackupAppName = "medops-backup"

	// BackupDir is where a volume destination is mounted.
	BackupDir = "/backup"
	// TerminationLog is where `medops-api backup` and `restore` leave
	// their JSON result line (--termination-log): the kubelet's default
	// terminationMessagePath.
	TerminationLog = corev1.TerminationMessagePathDefault

	volBackup = "backup"

	// The CronJob runs in UTC whatever the time zone of the
	// kube-controller-manager (the host's on k3s), so that the schedule
	// means the same everywhere and the operator can tell a missed run.
	BackupTimeZone = "Etc/UTC"
	// BackupStartingDeadlineSeconds: a run that could not start within an
	// hour of its time (the controller was down, the Pi was off) is
	// skipped, and the operator reports it missed, instead of a burst of
	// late runs.
	BackupStartingDeadlineSeconds = int64(3600)
	// backupHistory is how many finished Jobs of each outcome are kept:
	// the operator reads the last one's pod, users read the logs.
	backupHistory = int32(3)
	// backupBackoffLimit retries a failed run twice (a new pod each time,
	// restartPolicy Never, so each attempt's message stays readable).
	backupBackoffLimit = int32(2)
	// backupActiveDeadlineSeconds stops a hung run; a million tasks take
	// minutes, not hours.
	backupActiveDeadlineSeconds = int64(3 * 3600)
)

// BackupCronJobName is the name of the backup CronJob of m.
func BackupCronJobName(m *v1alpha1.MedOpsAPI) string { return m.Name + "-backup" }

// BackupJobLabels are the labels of the backup CronJob and of the Jobs it
// makes (copied from its job template): the operator's labels, so the
// cache holds the Jobs and maps them to their MedOpsAPI by instance, and
// the backup component.
func BackupJobLabels(m *v1alpha1.MedOpsAPI) map[string]string {
	l := Labels(m)
	l[LabelComponent] = ComponentBackup
	return l
}

// backupPodLabels are the labels of the backup pods; see BackupAppName.
func backupPodLabels(m *v1alpha1.MedOpsAPI) map[string]string {
	return map[string]string{
		LabelName:      BackupAppName,
		LabelInstance:  m.Name,
		LabelPartOf:    PartOf,
		LabelComponent: ComponentBackup,
	}
}

// BuildBackupCronJob returns the CronJob of spec.backup: our own image
// running `medops-api backup` against the MedOpsAPI's Service with the
// token, under the restricted Pod Security Standard. It never mounts the
// task volume (a ReadWriteOnce claim the workload pod holds); it reads
// the tasks through the API, which answers from one consistent snapshot.
func BuildBackupCronJob(d *Desired) *batchv1.CronJob {
	m := d.MedOpsAPI
	s := &m.Spec
	b := s.Backup

	args := []string{"backup",
		"--url", serviceURL(d),
		"--name", m.Name,
		"--retention", strconv.Itoa(int(*b.Retention)),
	}
	if !s.Auth.Disabled {
		args = append(args, "--token-file", TokenFile)
	}
	args = append(args, destinationArgs(&b.BackupDestination)...)
	args = append(args, "--termination-log", TerminationLog)

	c := corev1.Container{
		Name:            BackupContainerName,
		Image:           s.Image,
		ImagePullPolicy: s.ImagePullPolicy,
		Args:            args,
		// User variables first (a proxy for the object store, TZ); the
		// credentials after them win.
		Env:       append(append([]corev1.EnvVar(nil), s.Env...), s3Env(b.S3)...),
		Resources: jobResources(),
		// On failure the kubelet takes the log's tail (medops-api's clear
		// message on stderr) as the terminated message, which the
		// operator puts in the BackupSucceeded condition.
		TerminationMessagePath:   TerminationLog,
		TerminationMessagePolicy: corev1.TerminationMessageFallbackToLogsOnError,
		SecurityContext:          restrictedContainer(),
		VolumeMounts:             []corev1.VolumeMount{{Name: volTmp, MountPath: tmpDir}},
	}
	vols := []corev1.Volume{tmpVolume()}
	if !s.Auth.Disabled {
		c.VolumeMounts = append(c.VolumeMounts, corev1.VolumeMount{Name: volToken, MountPath: TokenDir, ReadOnly: true})
		vols = append(vols, tokenVolume(m, d.Inputs))
	}
	if v := b.Volume; v != nil {
		c.VolumeMounts = append(c.VolumeMounts, corev1.VolumeMount{Name: volBackup, MountPath: BackupDir})
		vols = append(vols, backupVolume(v, false))
	}

	pod := corev1.PodSpec{
		ServiceAccountName:           m.Name,
		AutomountServiceAccountToken: ptr(false),
		EnableServiceLinks:           ptr(false),
		RestartPolicy:                corev1.RestartPolicyNever,
		DNSPolicy:                    corev1.DNSClusterFirst,
		SecurityContext:              restrictedPod(),
		Containers:                   []corev1.Container{c},
		Volumes:                      vols,
		NodeSelector:                 maps.Clone(s.NodeSelector),
		Tolerations:                  s.Tolerations,
		Affinity:                     affinity(s),
		ImagePullSecrets:             s.ImagePullSecrets,
	}
	if len(pod.NodeSelector) == 0 {
		pod.NodeSelector = nil
	}

	return &batchv1.CronJob{
		ObjectMeta: objectMetaLabels(m, BackupCronJobName(m), BackupJobLabels(m)),
		Spec: batchv1.CronJobSpec{
			Schedule:                   b.Schedule,
			TimeZone:                   ptr(BackupTimeZone),
			StartingDeadlineSeconds:    ptr(BackupStartingDeadlineSeconds),
			ConcurrencyPolicy:          batchv1.ForbidConcurrent,
			SuccessfulJobsHistoryLimit: ptr(backupHistory),
			FailedJobsHistoryLimit:     ptr(backupHistory),
			JobTemplate: batchv1.JobTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: BackupJobLabels(m)},
				Spec: batchv1.JobSpec{
					BackoffLimit:          ptr(backupBackoffLimit),
					ActiveDeadlineSeconds: ptr(backupActiveDeadlineSeconds),
					Template: corev1.PodTemplateSpec{
						ObjectMeta: metav1.ObjectMeta{Labels: backupPodLabels(m)},
						Spec:       pod,
					},
				},
			},
		},
	}
}

// serviceURL is the in-cluster URL of the MedOpsAPI's API: its Service
// (resolved through the pod's DNS search path, so no cluster domain is
// assumed) and the base path the config serves under.
func serviceURL(d *Desired) string {
	m := d.MedOpsAPI
	return fmt.Sprintf("http://%s.%s.svc:%d%s", m.Name, m.Namespace, m.Spec.Service.Port, d.Config.Server.BasePath)
}

// destinationArgs are the destination flags of `medops-api backup` and
// `restore`.
func destinationArgs(dst *v1alpha1.BackupDestination) []string {
	if dst.Volume != nil {
		return []string{"--dir", BackupDir}
	}
	s3 := dst.S3
	args := []string{"--s3-endpoint", s3.Endpoint, "--s3-bucket", s3.Bucket}
	if s3.Prefix != "" {
		args = append(args, "--s3-prefix", s3.Prefix)
	}
	if s3.Region != "" {
		args = append(args, "--s3-region", s3.Region)
	}
	if s3.Insecure {
		args = append(args, "--s3-insecure")
	}
	return args
}

// s3Env passes the object store's credentials from their Secret; nil
// without S3. Environment variables are what the contract of the backup
// and restore commands names (the minio client reads them).
func s3Env(s3 *v1alpha1.BackupS3) []corev1.EnvVar {
	if s3 == nil {
		return nil
	}
	ref := func(key string) *corev1.EnvVarSource {
		return &corev1.EnvVarSource{SecretKeyRef: &corev1.SecretKeySelector{
			LocalObjectReference: corev1.LocalObjectReference{Name: s3.CredentialsSecret.Name},
			Key:                  key,
		}}
	}
	return []corev1.EnvVar{
		{Name: "AWS_ACCESS_KEY_ID", ValueFrom: ref(s3.CredentialsSecret.AccessKeyIDKey)},
		{Name: "AWS_SECRET_ACCESS_KEY", ValueFrom: ref(s3.CredentialsSecret.SecretAccessKeyKey)},
	}
}

// backupVolume mounts the destination claim (read-only for a restore).
func backupVolume(v *v1alpha1.BackupVolume, readOnly bool) corev1.Volume {
	return corev1.Volume{Name: volBackup, VolumeSource: corev1.VolumeSource{
		PersistentVolumeClaim: &corev1.PersistentVolumeClaimVolumeSource{ClaimName: v.ClaimName, ReadOnly: readOnly},
	}}
}

// jobResources are the backup container's: the defaults of a MedOpsAPI
// (the command streams, it holds no tasks in memory), with /tmp and logs
// as ephemeral storage.
func jobResources() corev1.ResourceRequirements {
	r := *v1alpha1.DefaultResources()
	r.Requests[corev1.ResourceEphemeralStorage] = apiresource.MustParse(ephemeralRequest)
	limit := apiresource.MustParse(tmpSizeLimit)
	limit.Add(apiresource.MustParse(logHeadroom))
	r.Limits[corev1.ResourceEphemeralStorage] = limit
	return r
}

// restoreInitContainers returns the workload pod's restore init container
// when spec.restore is set: the server's own image, config, data volume
// and connection string file, so that it opens the very store the server
// will, before the server does. `medops-api restore` imports only into an
// empty store and records the backup it imported; a pod restart finds
// that record and goes on.
func restoreInitContainers(d *Desired) []corev1.Container {
	m := d.MedOpsAPI
	s := &m.Spec
	dst := s.RestoreDestination()
	if dst == nil || s.TaskStore() == v1alpha1.TaskStoreNone {
		return nil
	}
	from := s.Restore.From
	name := from.Name
	if name == "" {
		name = m.Name
	}
	args := []string{"restore", "--config", ConfigDir + "/" + ConfigKey}
	if s.TaskStore() == v1alpha1.TaskStorePostgres {
		args = append(args, "--postgres-dsn-file", PostgresFile)
	}
	// latest stays latest once restored: the store's restore record makes
	// every later run skip, whatever latest names by then, so the pod
	// template (and the pod) need not change when the restore is done.
	args = append(args, "--from", from.File, "--name", name)
	args = append(args, destinationArgs(dst)...)
	args = append(args, "--termination-log", TerminationLog)

	srv := container(m)
	mounts := []corev1.VolumeMount{}
	for _, vm := range srv.VolumeMounts {
		if vm.Name != volToken { // the restore never talks to the API
			mounts = append(mounts, vm)
		}
	}
	if dst.Volume != nil {
		mounts = append(mounts, corev1.VolumeMount{Name: volBackup, MountPath: BackupDir, ReadOnly: true})
	}
	return []corev1.Container{{
		Name:                     RestoreContainerName,
		Image:                    s.Image,
		ImagePullPolicy:          s.ImagePullPolicy,
		Args:                     args,
		Env:                      append(append([]corev1.EnvVar(nil), s.Env...), s3Env(dst.S3)...),
		Resources:                srv.Resources,
		TerminationMessagePath:   TerminationLog,
		TerminationMessagePolicy: corev1.TerminationMessageFallbackToLogsOnError,
		SecurityContext:          restrictedContainer(),
		VolumeMounts:             mounts,
	}}
}

// restoreVolumes is the claim a restore reads from, when the destination
// is one.
func restoreVolumes(s *v1alpha1.MedOpsAPISpec) []corev1.Volume {
	dst := s.RestoreDestination()
	if dst == nil || dst.Volume == nil || s.TaskStore() == v1alpha1.TaskStoreNone {
		return nil
	}
	return []corev1.Volume{backupVolume(dst.Volume, true)}
}

// restrictedPod and restrictedContainer are the security contexts the
// restricted Pod Security Standard asks for, as the workload pod has them.
func restrictedPod() *corev1.PodSecurityContext {
	return &corev1.PodSecurityContext{
		RunAsNonRoot:        ptr(true),
		RunAsUser:           ptr(NonRootUID),
		RunAsGroup:          ptr(NonRootUID),
		FSGroup:             ptr(NonRootUID),
		FSGroupChangePolicy: ptr(corev1.FSGroupChangeOnRootMismatch),
		SeccompProfile:      &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeRuntimeDefault},
	}
}

func restrictedContainer() *corev1.SecurityContext {
	return &corev1.SecurityContext{
		RunAsNonRoot:             ptr(true),
		ReadOnlyRootFilesystem:   ptr(true),
		AllowPrivilegeEscalation: ptr(false),
		Capabilities:             &corev1.Capabilities{Drop: []corev1.Capability{"ALL"}},
		SeccompProfile:           &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeRuntimeDefault},
	}
}

// objectMetaLabels is objectMeta with other labels.
func objectMetaLabels(m *v1alpha1.MedOpsAPI, name string, labels map[string]string) metav1.ObjectMeta {
	om := objectMeta(m, name)
	om.Labels = labels
	return om
}
