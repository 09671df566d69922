package v1alpha1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// Condition types of scheduled backups and of a restore.
const (
	// ConditionBackupSucceeded is True when the last finished backup Job
	// wrote and verified its file, False when it failed or when a scheduled
	// run was missed. Only present while spec.backup is set.
	ConditionBackupSucceeded = "BackupSucceeded"
	// ConditionRestored is True once the restore init container of a
	// workload pod imported the backup of spec.restore.from (or found it
	// already imported), False when it refused (a task store that is not
	// empty) or failed. Only present while spec.restore is set.
	ConditionRestored = "Restored"
)

// Defaults of the backup fields; the CRD's default markers carry the same
// values, SetDefaults repeats them for code that never meets an apiserver.
const (
	DefaultBackupRetention = int32(7)
	DefaultAccessKeyIDKey  = "accessKeyID"
	DefaultSecretAccessKey = "secretAccessKey"
	DefaultRestoreFile     = RestoreLatest
	// RestoreLatest as restore.from.file restores the newest backup.
	RestoreLatest = "latest"
)

// BackupSpec schedules logical backups of the tasks: a CronJob runs
// `medops-api backup` in our own image, which reads every task from the
// MedOpsAPI's Service with the token (it never mounts the task volume),
// writes <name>-<UTC time>.ndjson.gz with its .sha256 to the destination,
// verifies it and keeps the newest retention backups.
// +kubebuilder:validation:XValidation:rule="has(self.volume) != has(self.s3)",message="backup needs exactly one destination: set volume.claimName or s3"
type BackupSpec struct {
	// Schedule in cron syntax, in UTC: five fields (minute hour
	// day-of-month month day-of-week), e.g. "0 3 * * *" for 03:00 every
	// day, or one of @hourly, @daily, @weekly, @monthly, @yearly.
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=128
	// +kubebuilder:validation:XValidation:rule="self.matches('^(@(yearly|annually|monthly|weekly|daily|midnight|hourly)|[0-9A-Za-z*?,/-]+( +[0-9A-Za-z*?,/-]+){4})$')",message="backup.schedule must be a cron schedule of five fields (minute hour day-of-month month day-of-week, e.g. \"0 3 * * *\") or one of @hourly, @daily, @weekly, @monthly, @yearly; the time zone is always UTC (no TZ=)"
	Schedule string `json:"schedule"`

	// Retention is how many backups of this MedOpsAPI the destination
	// keeps; older ones are deleted after a new one is verified. Defaults to 7.
	// +optional
	// +kubebuilder:default=7
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=1000
	Retention *int32 `json:"retention,omitempty"`

	BackupDestination `json:",inline"`
}

// BackupDestination is where backups are written (or read from by a
// restore): an existing claim, or an S3 bucket.
type BackupDestination struct {
	// Volume is an existing PersistentVolumeClaim of the namespace, e.g. on
	// an NFS share or a USB disk: not the task store's own claim, which
	// would go with the SD card it sits on.
	// +optional
	Volume *BackupVolume `json:"volume,omitempty"`

	// S3 is a bucket of an S3-compatible object store (MinIO, SeaweedFS,
	// Garage, AWS S3...).
	// +optional
	S3 *BackupS3 `json:"s3,omitempty"`
}

// BackupVolume names the claim backups are written to.
type BackupVolume struct {
	// ClaimName of an existing PersistentVolumeClaim in the MedOpsAPI's
	// namespace. The backup pods run as user and group 65532; the claim's
	// volume must let that group write (fsGroup covers most volume types,
	// not NFS, whose export must allow it).
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=253
	// +kubebuilder:validation:Pattern=`^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$`
	ClaimName string `json:"claimName"`
}

// BackupS3 is a bucket of an S3-compatible object store.
type BackupS3 struct {
	// Endpoint is the object store's host or host:port, without a scheme,
	// e.g. minio.storage.svc:9000 or s3.eu-central-1.amazonaws.com.
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=253
	// +kubebuilder:validation:XValidation:rule="self.matches('^[A-Za-z0-9]([-A-Za-z0-9.]*[A-Za-z0-9])?(:[0-9]{1,5})?$')",message="backup.s3.endpoint must be a host or host:port without a scheme or path, e.g. minio.storage.svc:9000 (set insecure: true for plain HTTP)"
	Endpoint string `json:"endpoint"`

	// Bucket the backups go into; it must exist.
	// +kubebuilder:validation:MinLength=3
	// +kubebuilder:validation:MaxLength=63
	// +kubebuilder:validation:XValidation:rule="self.matches('^[a-z0-9][-a-z0-9.]*[a-z0-9]$')",message="backup.s3.bucket must be an S3 bucket name: lower-case letters, digits, dots and hyphens"
	Bucket string `json:"bucket"`

	// Prefix of the object names, e.g. medops/lab; unset writes at the
	// bucket's top level.
	// +optional
	// +kubebuilder:validation:MaxLength=512
	// +kubebuilder:validation:XValidation:rule="!self.startsWith('/')",message="backup.s3.prefix must not start with /"
	Prefix string `json:"prefix,omitempty"`

	// Region of the bucket, for stores that check it (AWS S3).
	// +optional
	// +kubebuilder:validation:MaxLength=64
	Region string `json:"region,omitempty"`

	// Insecure talks plain HTTP to the endpoint instead of HTTPS: only
	// for a store inside the cluster or on a trusted network.
	// +optional
	Insecure bool `json:"insecure,omitempty"`

	// CredentialsSecret names the Secret holding the access key. The
	// pods get its two keys as the AWS_ACCESS_KEY_ID and
	// AWS_SECRET_ACCESS_KEY environment variables.
	CredentialsSecret S3CredentialsSecret `json:"credentialsSecret"`
}

// S3CredentialsSecret names a Secret of the namespace and its two keys.
type S3CredentialsSecret struct {
	// Name of the Secret.
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=253
	Name string `json:"name"`

	// AccessKeyIDKey is the key holding the access key id. Defaults to
	// accessKeyID.
	// +optional
	// +kubebuilder:default=accessKeyID
	// +kubebuilder:validation:MaxLength=253
	// +kubebuilder:validation:Pattern=`^[-._a-zA-Z0-9]+$`
	AccessKeyIDKey string `json:"accessKeyIDKey,omitempty"`

	// SecretAccessKeyKey is the key holding the secret access key.
	// Defaults to secretAccessKey.
	// +optional
	// +kubebuilder:default=secretAccessKey
	// +kubebuilder:validation:MaxLength=253
	// +kubebuilder:validation:Pattern=`^[-._a-zA-Z0-9]+$`
	SecretAccessKeyKey string `json:"secretAccessKeyKey,omitempty"`
}

// RestoreSpec fills an empty task store from a backup before the workload
// serves: every workload pod gets an init container running
// `medops-api restore` with the server's config, data volume and
// connection string file. It imports only into an empty store and records
// which backup it imported, so a second pod start never imports twice; a
// store that holds tasks (and no such record) is refused, and the pod
// does not start.
type RestoreSpec struct {
	// From names the backup to restore.
	From RestoreSource `json:"from"`
}

// RestoreSource is a backup file and where it is.
// +kubebuilder:validation:XValidation:rule="!(has(self.volume) && has(self.s3))",message="restore.from takes at most one destination: volume or s3 (neither uses spec.backup's)"
type RestoreSource struct {
	// File is the backup's file name, e.g.
	// medops-20260105T030000Z.ndjson.gz, or latest for the newest backup
	// of name. Defaults to latest.
	// +optional
	// +kubebuilder:default=latest
	// +kubebuilder:validation:MaxLength=253
	// +kubebuilder:validation:XValidation:rule="self == 'latest' || self.matches('^[A-Za-z0-9][-A-Za-z0-9._]*[.]ndjson[.]gz$')",message="restore.from.file must be latest or a backup file name such as medops-20260105T030000Z.ndjson.gz"
	File string `json:"file,omitempty"`

	// Name is the MedOpsAPI whose backups are meant (the file names'
	// prefix); unset means this MedOpsAPI's own name. Set it to restore
	// another instance's backups, e.g. when moving to a new one.
	// +optional
	// +kubebuilder:validation:MaxLength=63
	// +kubebuilder:validation:Pattern=`^[a-z0-9]([-a-z0-9]*[a-z0-9])?$`
	Name string `json:"name,omitempty"`

	// The destination to read from; with neither volume nor s3, the one of
	// spec.backup.
	BackupDestination `json:",inline"`
}

// BackupStatus is what the last successful backup wrote, read from its
// Job's pod (the JSON line `medops-api backup` leaves as its termination
// message).
type BackupStatus struct {
	// LastSuccessfulTime is when the last successful backup was taken.
	// +optional
	LastSuccessfulTime *metav1.Time `json:"lastSuccessfulTime,omitempty"`

	// File is the name of that backup's file at the destination.
	// +optional
	File string `json:"file,omitempty"`

	// TaskCount is how many tasks it holds.
	// +optional
	TaskCount *int64 `json:"taskCount,omitempty"`

	// Job is the Job that took it.
	// +optional
	Job string `json:"job,omitempty"`
}

// RestoreStatus is what the restore init container reported.
type RestoreStatus struct {
	// File is the backup the task store was restored from (or found
	// already restored from). A restore of latest is pinned to it from
	// then on: a restarted pod must find the record of this file, not
	// resolve latest to a newer backup and refuse a store that is no
	// longer empty.
	// +optional
	File string `json:"file,omitempty"`
}

// BackupEnabled reports whether scheduled backups are wanted.
func (s *MedOpsAPISpec) BackupEnabled() bool { return s.Backup != nil }

// RestoreDestination is where spec.restore reads from: its own
// destination, else spec.backup's; nil when neither is set.
func (s *MedOpsAPISpec) RestoreDestination() *BackupDestination {
	if s.Restore == nil {
		return nil
	}
	if d := &s.Restore.From.BackupDestination; d.Volume != nil || d.S3 != nil {
		return d
	}
	if s.Backup != nil {
		return &s.Backup.BackupDestination
	}
	return nil
}

// setBackupDefaults fills the backup and restore defaults the CRD's
// markers give.
func (s *MedOpsAPISpec) setBackupDefaults() {
	if b := s.Backup; b != nil {
		if b.Retention == nil {
			b.Retention = ptr(DefaultBackupRetention)
		}
		b.S3.setDefaults()
	}
	if r := s.Restore; r != nil {
		if r.From.File == "" {
			r.From.File = DefaultRestoreFile
		}
		r.From.S3.setDefaults()
	}
}

func (b *BackupS3) setDefaults() {
	if b == nil {
		return
	}
	if b.CredentialsSecret.AccessKeyIDKey == "" {
		b.CredentialsSecret.AccessKeyIDKey = DefaultAccessKeyIDKey
	}
	if b.CredentialsSecret.SecretAccessKeyKey == "" {
		b.CredentialsSecret.SecretAccessKeyKey = DefaultSecretAccessKey
	}
}
