package resource_test

import (
	"slices"
	"strings"
	"testing"

	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"

	"github.com/medops/medops/operator/resource"
)

// backupScenarios are the MedOpsAPIs with backups or a restore; they are
// scenarios of TestChildrenGolden too.
func backupScenarios() []scenario {
	return []scenario{
		{name: "backup-volume", sample: "medops_v1alpha1_medopsapi_backup.yaml"},
		{name: "backup-s3-restore-postgres", spec: `
replicas: 2
storage: {postgres: {secretRef: {name: medops-db-app}}}
ingress: {enabled: true, className: traefik, host: api.lab.local, path: /medops}
env: [{name: HTTPS_PROXY, value: "http://proxy.lab.local:3128"}]
backup:
  schedule: "30 2 * * 1-5"
  retention: 14
  s3:
    endpoint: minio.storage.svc:9000
    bucket: medops-backups
    prefix: lab/medops
    region: eu-central-1
    insecure: true
    credentialsSecret: {name: minio-medops, accessKeyIDKey: user, secretAccessKeyKey: password}
restore:
  from: {file: medops-20260105T023000Z.ndjson.gz}`},
		{name: "restore-from-claim-auth-disabled", spec: `
auth: {disabled: true}
restore:
  from: {name: old-medops, volume: {claimName: usb-disk}}`},
	}
}

// TestBackupJobNeverMountsTheTaskStore: the backup reads the tasks through
// the Service with the token; a ReadWriteOnce task claim mounted by a Job
// would keep it from starting next to the workload pod (or the workload
// pod from restarting), and bbolt's lock would stop one of them.
func TestBackupJobNeverMountsTheTaskStore(t *testing.T) {
	for _, sc := range append(backupScenarios(), scenario{name: "claim-to-s3", spec: `
backup: {schedule: "@daily", s3: {endpoint: s3.amazonaws.com, bucket: b1b, credentialsSecret: {name: aws}}}`}) {
		t.Run(sc.name, func(t *testing.T) {
			m := load(t, sc)
			if m.Spec.Backup == nil {
				t.Skip("no backup")
			}
			cj := resource.BuildBackupCronJob(prepare(t, m, inputsFor(m)))
			pod := cj.Spec.JobTemplate.Spec.Template.Spec
			for _, v := range pod.Volumes {
				if pvc := v.PersistentVolumeClaim; pvc != nil && pvc.ClaimName == resource.PVCName(m) {
					t.Errorf("the backup pod mounts the task claim %s", pvc.ClaimName)
				}
				if v.Secret != nil && m.Spec.Storage != nil && m.Spec.Storage.Postgres != nil && v.Secret.SecretName == m.Spec.Storage.Postgres.SecretRef.Name {
					t.Errorf("the backup pod mounts the database's Secret %s", v.Secret.SecretName)
				}
			}
			if cj.Spec.ConcurrencyPolicy != batchv1.ForbidConcurrent {
				t.Errorf("concurrencyPolicy %s, want Forbid", cj.Spec.ConcurrencyPolicy)
			}
			c := pod.Containers[0]
			args := strings.Join(c.Args, " ")
			if !strings.HasPrefix(args, "backup --url http://"+m.Name+".lab.svc:") || !strings.HasSuffix(args, "--termination-log /dev/termination-log") {
				t.Errorf("args %q: want backup --url <Service> ... --termination-log /dev/termination-log", args)
			}
			if m.Spec.Auth.Disabled == strings.Contains(args, "--token-file "+resource.TokenFile) {
				t.Errorf("args %q: the token file is passed exactly when auth is on", args)
			}
			// The backup pods must not look like the API's pods, or the
			// Service would send requests to them.
			sel := resource.SelectorLabels(m)
			pl := cj.Spec.JobTemplate.Spec.Template.Labels
			if pl[resource.LabelName] == sel[resource.LabelName] {
				t.Errorf("backup pod labels %v match the Service's selector %v", pl, sel)
			}
		})
	}
}

// TestRestoreInitContainerSharesTheServersStore: the init container opens
// the very store the server will: same config file, data volume and
// connection string file, no token.
func TestRestoreInitContainerSharesTheServersStore(t *testing.T) {
	for _, sc := range backupScenarios() {
		t.Run(sc.name, func(t *testing.T) {
			m := load(t, sc)
			dep := resource.BuildDeployment(prepare(t, m, inputsFor(m)))
			pod := dep.Spec.Template.Spec
			if m.Spec.Restore == nil {
				if len(pod.InitContainers) != 0 {
					t.Fatalf("init containers without spec.restore: %v", pod.InitContainers)
				}
				return
			}
			if len(pod.InitContainers) != 1 {
				t.Fatalf("want one restore init container, got %d", len(pod.InitContainers))
			}
			ic, main := pod.InitContainers[0], pod.Containers[0]
			mounts := func(c corev1.Container) map[string]string {
				out := map[string]string{}
				for _, vm := range c.VolumeMounts {
					out[vm.Name] = vm.MountPath
				}
				return out
			}
			im, mm := mounts(ic), mounts(main)
			for name, path := range mm {
				if name == "token" {
					if _, ok := im[name]; ok {
						t.Errorf("the restore mounts the token")
					}
					continue
				}
				if im[name] != path {
					t.Errorf("volume %s: server at %q, restore at %q", name, path, im[name])
				}
			}
			if ic.Image != main.Image || !slices.Contains(ic.Args, "--config") {
				t.Errorf("restore image %s args %v; want the server's image with --config", ic.Image, ic.Args)
			}
		})
	}
}

// TestRestoreNamesTheFileAsTheSpecDoes: the init container is given
// spec.restore.from.file as it is, latest included; what it restored
// changes nothing in the pod template (the store's record makes later runs
// skip), so finishing a restore does not roll the pod it restored.
func TestRestoreNamesTheFileAsTheSpecDoes(t *testing.T) {
	for _, file := range []string{"latest", "medops-20260101T030000Z.ndjson.gz"} {
		m := fromSpec(t, `
backup: {schedule: "@daily", volume: {claimName: backups}}
restore: {from: {file: `+file+`}}`)
		args := resource.BuildDeployment(prepare(t, m, inputsFor(m))).Spec.Template.Spec.InitContainers[0].Args
		i := slices.Index(args, "--from")
		if i < 0 || args[i+1] != file {
			t.Errorf("restore of %s: args %v", file, args)
		}
	}
}
