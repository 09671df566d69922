package v1alpha1_test

import (
	"fmt"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/yaml"

	"github.com/medops/medops/api/v1alpha1"
	"github.com/medops/medops/operator/resource"
)

// TestInvalidBackupsAreRefused sends each invalid backup or restore spec to
// the real apiserver and expects the CRD's exact message.
func TestInvalidBackupsAreRefused(t *testing.T) {
	const vol = `volume: {claimName: backups}`
	cases := []struct{ name, spec, want string }{
		{"no destination", `backup: {schedule: "0 3 * * *"}`,
			"backup needs exactly one destination: set volume.claimName or s3"},
		{"two destinations", `backup: {schedule: "0 3 * * *", ` + vol + `, s3: {endpoint: minio:9000, bucket: bkp, credentialsSecret: {name: s}}}`,
			"backup needs exactly one destination: set volume.claimName or s3"},
		{"schedule of four fields", `backup: {schedule: "0 3 * *", ` + vol + `}`,
			`backup.schedule must be a cron schedule of five fields (minute hour day-of-month month day-of-week, e.g. "0 3 * * *") or one of @hourly, @daily, @weekly, @monthly, @yearly; the time zone is always UTC (no TZ=)`},
		{"schedule with a time zone", `backup: {schedule: "TZ=Europe/Berlin 0 3 * * *", ` + vol + `}`,
			"backup.schedule must be a cron schedule of five fields"},
		{"schedule @every", `backup: {schedule: "@every 1h", ` + vol + `}`,
			"backup.schedule must be a cron schedule of five fields"},
		{"schedule missing", `backup: {` + vol + `}`, "spec.backup.schedule: Required value"},
		{"retention zero", `backup: {schedule: "@daily", retention: 0, ` + vol + `}`,
			"spec.backup.retention: Invalid value: 0: spec.backup.retention in body should be greater than or equal to 1"},
		{"claim name not a name", `backup: {schedule: "@daily", volume: {claimName: My_Disk}}`,
			"spec.backup.volume.claimName in body should match"},
		{"s3 endpoint with scheme", `backup: {schedule: "@daily", s3: {endpoint: "https://minio:9000", bucket: bkp, credentialsSecret: {name: s}}}`,
			"backup.s3.endpoint must be a host or host:port without a scheme or path, e.g. minio.storage.svc:9000 (set insecure: true for plain HTTP)"},
		{"s3 bucket upper case", `backup: {schedule: "@daily", s3: {endpoint: minio:9000, bucket: Backups, credentialsSecret: {name: s}}}`,
			"backup.s3.bucket must be an S3 bucket name: lower-case letters, digits, dots and hyphens"},
		{"s3 prefix absolute", `backup: {schedule: "@daily", s3: {endpoint: minio:9000, bucket: bkp, prefix: /lab, credentialsSecret: {name: s}}}`,
			"backup.s3.prefix must not start with /"},
		{"s3 without credentials", `backup: {schedule: "@daily", s3: {endpoint: minio:9000, bucket: bkp}}`,
			"spec.backup.s3.credentialsSecret: Required value"},
		{"backup without the tasks module", `
modules: {tasks: {enabled: false}}
backup: {schedule: "@daily", ` + vol + `}`,
			"backup and restore copy the tasks: they need the tasks module (remove modules.tasks.enabled: false, or remove backup and restore)"},
		{"restore without a destination", `restore: {from: {file: latest}}`,
			"restore.from needs a destination: set restore.from.volume or restore.from.s3, or spec.backup, whose destination it then reads"},
		{"restore from two destinations", `restore: {from: {` + vol + `, s3: {endpoint: minio:9000, bucket: bkp, credentialsSecret: {name: s}}}}`,
			"restore.from takes at most one destination: volume or s3 (neither uses spec.backup's)"},
		{"restore of a file that is no backup", `restore: {from: {file: ../etc/passwd, ` + vol + `}}`,
			"restore.from.file must be latest or a backup file name such as medops-20260105T030000Z.ndjson.gz"},
	}
	expectRefused(t, "invalid-backup", cases)
}

// TestValidBackupsAreAccepted covers the rules from the valid side.
func TestValidBackupsAreAccepted(t *testing.T) {
	cases := []struct{ name, spec string }{
		{"claim, defaults", `backup: {schedule: "0 3 * * *", volume: {claimName: backups}}`},
		{"every macro and field form", `backup: {schedule: "@weekly", volume: {claimName: backups}}`},
		{"lists, ranges, steps, names", `backup: {schedule: "*/15 1-5,22 ? jan-jun MON-FRI", volume: {claimName: backups}}`},
		{"s3 with every field", `backup:
  schedule: "@daily"
  retention: 1000
  s3: {endpoint: s3.eu-central-1.amazonaws.com, bucket: medops.backups-1, prefix: lab/medops/, region: eu-central-1, insecure: false,
       credentialsSecret: {name: aws, accessKeyIDKey: AWS_ACCESS_KEY_ID, secretAccessKeyKey: AWS_SECRET_ACCESS_KEY}}`},
		{"restore from the backup's destination", `
backup: {schedule: "@daily", volume: {claimName: backups}}
restore: {from: {file: latest}}`},
		{"restore of another instance's file from S3 without backups", `
storage: {postgres: {secretRef: {name: db-app}}}
replicas: 2
restore: {from: {name: old-medops, file: old-medops-20260105T030000Z.ndjson.gz, s3: {endpoint: "minio:9000", bucket: bkp, credentialsSecret: {name: s}}}}`},
	}
	ns := createNamespace(t, "valid-backup")
	for i, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if err := k8s.Create(ctxT(t), newObject(t, ns, fmt.Sprintf("ok-%d", i), tc.spec)); err != nil {
				t.Fatalf("apiserver refused a valid MedOpsAPI: %v\n%s", err, tc.spec)
			}
		})
	}
}

// TestBackupPodsAdmittedUnderRestrictedPodSecurity creates the backup
// Job's pod, as the Job controller would from the CronJob's template, and
// the workload pod with its restore init container, in a namespace
// enforcing the restricted Pod Security Standard.
func TestBackupPodsAdmittedUnderRestrictedPodSecurity(t *testing.T) {
	ns := createNamespace(t, "restricted-backup", map[string]string{
		"pod-security.kubernetes.io/enforce":         "restricted",
		"pod-security.kubernetes.io/enforce-version": "latest",
	})
	for name, spec := range map[string]string{
		"volume": `backup: {schedule: "@daily", volume: {claimName: backups}}
restore: {from: {file: latest}}`,
		"s3": `backup: {schedule: "@daily", s3: {endpoint: "minio:9000", bucket: bkp, insecure: true, credentialsSecret: {name: s}}}
restore: {from: {file: latest}}
auth: {disabled: true}`,
	} {
		t.Run(name, func(t *testing.T) {
			m := &v1alpha1.MedOpsAPI{}
			if err := yaml.UnmarshalStrict([]byte(spec), &m.Spec); err != nil {
				t.Fatal(err)
			}
			m.Name, m.Namespace, m.UID = name, ns, "00000000-0000-4000-8000-00000000000c"
			d, err := resource.Prepare(m, resource.Inputs{TokenSecretName: resource.TokenSecretName(m)})
			if err != nil {
				t.Fatal(err)
			}
			for what, tmpl := range map[string]corev1.PodTemplateSpec{
				"backup":  resource.BuildBackupCronJob(d).Spec.JobTemplate.Spec.Template,
				"restore": resource.BuildDeployment(d).Spec.Template,
			} {
				if what == "restore" && len(tmpl.Spec.InitContainers) != 1 {
					t.Fatalf("no restore init container: %v", tmpl.Spec.InitContainers)
				}
				pod := &corev1.Pod{
					ObjectMeta: metav1.ObjectMeta{Name: what + "-" + name, Namespace: ns, Labels: tmpl.Labels},
					Spec:       *tmpl.Spec.DeepCopy(),
				}
				pod.Spec.ServiceAccountName = ""
				if err := k8s.Create(ctxT(t), pod); err != nil {
					t.Fatalf("restricted namespace refused the %s pod: %v", what, err)
				}
			}
		})
	}
}
