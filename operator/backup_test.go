package operator

import (
	"fmt"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	eventsv1 "k8s.io/api/events/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/medops/medops/api/v1alpha1"
	"github.com/medops/medops/operator/resource"
)

// backupWait covers the operator's restore recheck: nothing it watches
// changes when an init container fails, so it looks again on its own.
const backupWait = restoreRecheck + wait

func withBackup(m *v1alpha1.MedOpsAPI) {
	m.Spec.Backup = &v1alpha1.BackupSpec{
		Schedule:          "0 3 * * *",
		BackupDestination: v1alpha1.BackupDestination{Volume: &v1alpha1.BackupVolume{ClaimName: "backups"}},
	}
}

// runBackupJob plays the CronJob controller, the Job controller and the
// kubelet, which envtest lacks: a Job from the CronJob's template, its pod,
// the pod's terminated backup container, then the Job's final status, all
// written through the API as those controllers write them.
func runBackupJob(t *testing.T, s *envSuite, cj *batchv1.CronJob, name string, exitCode int32, message string) *batchv1.Job {
	t.Helper()
	ctx := t.Context()
	tmpl := cj.Spec.JobTemplate
	job := &batchv1.Job{
		ObjectMeta: metav1.ObjectMeta{Namespace: cj.Namespace, Name: name, Labels: tmpl.Labels,
			OwnerReferences: []metav1.OwnerReference{{APIVersion: "batch/v1", Kind: "CronJob", Name: cj.Name, UID: cj.UID, Controller: ptr(true)}}},
		Spec: *tmpl.Spec.DeepCopy(),
	}
	create(t, s, job)
	start := metav1.Now()

	labels := map[string]string{labelJobControllerUID: string(job.UID), "batch.kubernetes.io/job-name": name}
	for k, v := range tmpl.Spec.Template.Labels {
		labels[k] = v
	}
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: cj.Namespace, Name: name + "-x1", Labels: labels,
			OwnerReferences: []metav1.OwnerReference{{APIVersion: "batch/v1", Kind: "Job", Name: name, UID: job.UID, Controller: ptr(true)}}},
		Spec: *tmpl.Spec.Template.Spec.DeepCopy(),
	}
	pod.Spec.ServiceAccountName = ""
	create(t, s, pod)
	phase := corev1.PodSucceeded
	if exitCode != 0 {
		phase = corev1.PodFailed
	}
	pod.Status = corev1.PodStatus{Phase: phase, ContainerStatuses: []corev1.ContainerStatus{{
		Name: resource.BackupContainerName, Image: pod.Spec.Containers[0].Image,
		State: corev1.ContainerState{Terminated: &corev1.ContainerStateTerminated{
			ExitCode: exitCode, Reason: map[bool]string{true: "Completed", false: "Error"}[exitCode == 0],
			Message: message, StartedAt: start, FinishedAt: metav1.Now(),
		}},
	}}}
	if err := s.client.Status().Update(ctx, pod); err != nil {
		t.Fatalf("write pod status: %v", err)
	}

	now := metav1.Now()
	job.Status = batchv1.JobStatus{StartTime: &start}
	if exitCode == 0 {
		job.Status.Succeeded = 1
		job.Status.CompletionTime = &now
		job.Status.Conditions = []batchv1.JobCondition{
			{Type: batchv1.JobSuccessCriteriaMet, Status: corev1.ConditionTrue, LastTransitionTime: now, LastProbeTime: now},
			{Type: batchv1.JobComplete, Status: corev1.ConditionTrue, LastTransitionTime: now, LastProbeTime: now},
		}
	} else {
		job.Status.Failed = 1
		job.Status.Conditions = []batchv1.JobCondition{
			{Type: batchv1.JobFailureTarget, Status: corev1.ConditionTrue, Reason: "BackoffLimitExceeded", Message: "Job has reached the specified backoff limit", LastTransitionTime: now, LastProbeTime: now},
			{Type: batchv1.JobFailed, Status: corev1.ConditionTrue, Reason: "BackoffLimitExceeded", Message: "Job has reached the specified backoff limit", LastTransitionTime: now, LastProbeTime: now},
		}
	}
	if err := s.client.Status().Update(ctx, job); err != nil {
		t.Fatalf("write Job status: %v", err)
	}
	return job
}

// warningEvent waits for a Warning Event of reason on the MedOpsAPI whose
// note contains want.
func warningEvent(t *testing.T, s *envSuite, ns, name, reason, want string) {
	t.Helper()
	eventually(t, wait, "Warning "+reason+" event", func() error {
		var evs eventsv1.EventList
		if err := s.client.List(t.Context(), &evs, client.InNamespace(ns)); err != nil {
			return err
		}
		for _, e := range evs.Items {
			if e.Type == corev1.EventTypeWarning && e.Reason == reason && e.Regarding.Name == name && strings.Contains(e.Note, want) {
				return nil
			}
		}
		return fmt.Errorf("no Warning %s event saying %q among %d events", reason, want, len(evs.Items))
	})
}

func waitCondition(t *testing.T, s *envSuite, ns, name, typ string, timeout time.Duration, check func(*v1alpha1.MedOpsAPI, *metav1.Condition) error) *v1alpha1.MedOpsAPI {
	t.Helper()
	var m v1alpha1.MedOpsAPI
	eventually(t, timeout, typ+" condition", func() error {
		if err := get(t, s, ns, name, &m); err != nil {
			return err
		}
		c := condition(&m, typ)
		if c == nil {
			return fmt.Errorf("no %s condition", typ)
		}
		if c.ObservedGeneration != m.Generation {
			return fmt.Errorf("%s is for generation %d, not %d", typ, c.ObservedGeneration, m.Generation)
		}
		return check(&m, c)
	})
	return &m
}

func wantCondition(status metav1.ConditionStatus, reason, says string) func(*v1alpha1.MedOpsAPI, *metav1.Condition) error {
	return func(_ *v1alpha1.MedOpsAPI, c *metav1.Condition) error {
		if c.Status != status || c.Reason != reason || !strings.Contains(c.Message, says) {
			return fmt.Errorf("condition %s %s %q, want %s %s saying %q", c.Status, c.Reason, c.Message, status, reason, says)
		}
		return nil
	}
}

// TestBackupStatusFromJobs: the backup CronJob is one more child; a Job
// that completes fills status.backup from its pod's termination message
// and makes BackupSucceeded True, a newer failed Job makes it False with
// medops-api's own message and a Warning Event, a run the schedule missed
// does the same, and turning backups off removes the CronJob and the
// condition.
func TestBackupStatusFromJobs(t *testing.T) {
	t.Parallel()
	s := suite(t)
	ns := s.newNamespace(t, "backup")
	create(t, s, newAPI(ns, "api", withBackup))

	var cj batchv1.CronJob
	eventually(t, wait, "backup CronJob created", func() error { return get(t, s, ns, "api-backup", &cj) })
	var m v1alpha1.MedOpsAPI
	if err := get(t, s, ns, "api", &m); err != nil {
		t.Fatal(err)
	}
	if !isController(&cj, &m) || cj.Spec.ConcurrencyPolicy != batchv1.ForbidConcurrent || cj.Spec.Schedule != "0 3 * * *" {
		t.Fatalf("CronJob owner %v policy %s schedule %q", cj.OwnerReferences, cj.Spec.ConcurrencyPolicy, cj.Spec.Schedule)
	}
	waitCondition(t, s, ns, "api", v1alpha1.ConditionBackupSucceeded, wait, wantCondition(metav1.ConditionUnknown, ReasonNoBackupYet, "no backup Job"))

	taken := time.Date(2026, 1, 5, 3, 0, 12, 0, time.UTC)
	runBackupJob(t, s, &cj, "api-backup-29000001", 0,
		`{"file":"api-20260105T030012Z.ndjson.gz","tasks":1234,"sha256":"ab12","bytes":98765,"time":"2026-01-05T03:00:12Z"}`)
	got := waitCondition(t, s, ns, "api", v1alpha1.ConditionBackupSucceeded, wait,
		wantCondition(metav1.ConditionTrue, ReasonBackupSucceeded, "api-20260105T030012Z.ndjson.gz (1234 tasks)"))
	b := got.Status.Backup
	if b == nil || b.File != "api-20260105T030012Z.ndjson.gz" || b.TaskCount == nil || *b.TaskCount != 1234 ||
		b.LastSuccessfulTime == nil || !b.LastSuccessfulTime.Time.Equal(taken) || b.Job != "api-backup-29000001" {
		t.Fatalf("status.backup = %+v", b)
	}

	failure := "Error: export from http://api." + ns + ".svc:80: 503 Service Unavailable: the task store is closing"
	job := runBackupJob(t, s, &cj, "api-backup-29000002", 1, "starting backup of api\n"+failure)
	got = waitCondition(t, s, ns, "api", v1alpha1.ConditionBackupSucceeded, wait,
		wantCondition(metav1.ConditionFalse, ReasonBackupFailed, "Job "+job.Name+" failed: starting backup of api\n"+failure))
	if got.Status.Backup == nil || got.Status.Backup.File != "api-20260105T030012Z.ndjson.gz" {
		t.Errorf("a failed run changed status.backup: %+v", got.Status.Backup)
	}
	warningEvent(t, s, ns, "api", ReasonBackupFailed, failure)

	// The kube-controller-manager last scheduled a run three days ago and
	// none since: the runs of the two days after were missed.
	eventually(t, wait, "CronJob last schedule time written", func() error {
		if err := get(t, s, ns, "api-backup", &cj); err != nil {
			return err
		}
		cj.Status.LastScheduleTime = &metav1.Time{Time: time.Now().Add(-72 * time.Hour)}
		return s.client.Status().Update(t.Context(), &cj)
	})
	waitCondition(t, s, ns, "api", v1alpha1.ConditionBackupSucceeded, wait,
		wantCondition(metav1.ConditionFalse, ReasonScheduleMissed, "did not start within 1h0m0s"))
	warningEvent(t, s, ns, "api", ReasonScheduleMissed, "did not start within 1h0m0s")

	update(t, s, ns, "api", func(m *v1alpha1.MedOpsAPI) { m.Spec.Backup = nil })
	eventually(t, wait, "CronJob deleted and condition removed", func() error {
		if err := gone(t, s, ns, "api-backup", &batchv1.CronJob{}); err != nil {
			return err
		}
		if err := get(t, s, ns, "api", &m); err != nil {
			return err
		}
		if c := condition(&m, v1alpha1.ConditionBackupSucceeded); c != nil {
			return fmt.Errorf("BackupSucceeded still there: %+v", c)
		}
		if m.Status.Backup == nil || m.Status.Backup.File == "" {
			return fmt.Errorf("status.backup of the last backup was dropped")
		}
		return nil
	})
}

// runRestorePod plays the ReplicaSet controller and the kubelet: a pod of
// the Deployment's template whose restore init container ended as given.
func runRestorePod(t *testing.T, s *envSuite, ns, name string, init corev1.ContainerStatus, phase corev1.PodPhase) {
	t.Helper()
	var tmpl corev1.PodTemplateSpec
	eventually(t, wait, "Deployment with a restore init container", func() error {
		var dep appsv1.Deployment
		if err := get(t, s, ns, "api", &dep); err != nil {
			return err
		}
		tmpl = dep.Spec.Template
		if len(tmpl.Spec.InitContainers) != 1 || tmpl.Spec.InitContainers[0].Name != resource.RestoreContainerName {
			return fmt.Errorf("init containers %v", tmpl.Spec.InitContainers)
		}
		return nil
	})
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, Labels: tmpl.Labels},
		Spec:       *tmpl.Spec.DeepCopy(),
	}
	pod.Spec.ServiceAccountName = ""
	create(t, s, pod)
	init.Name, init.Image = resource.RestoreContainerName, pod.Spec.InitContainers[0].Image
	pod.Status = corev1.PodStatus{Phase: phase, InitContainerStatuses: []corev1.ContainerStatus{init}}
	if err := s.client.Status().Update(t.Context(), pod); err != nil {
		t.Fatalf("write pod status: %v", err)
	}
}

// TestRestoredCondition: the workload pod gets the restore init container;
// Restored follows what it reports. A store that is not empty is refused,
// with a clear reason and a Warning Event; a later pod that restores makes
// it True with the count of tasks.
func TestRestoredCondition(t *testing.T) {
	t.Parallel()
	s := suite(t)
	ns := s.newNamespace(t, "restore")
	create(t, s, newAPI(ns, "api", func(m *v1alpha1.MedOpsAPI) {
		m.Spec.Restore = &v1alpha1.RestoreSpec{From: v1alpha1.RestoreSource{
			BackupDestination: v1alpha1.BackupDestination{Volume: &v1alpha1.BackupVolume{ClaimName: "old-backups"}},
		}}
	}))
	waitCondition(t, s, ns, "api", v1alpha1.ConditionRestored, wait, wantCondition(metav1.ConditionUnknown, ReasonRestoring, "waiting"))

	refusal := "restore: task store is not empty; refusing to restore"
	now := metav1.Now()
	runRestorePod(t, s, ns, "api-1", corev1.ContainerStatus{
		State: corev1.ContainerState{Waiting: &corev1.ContainerStateWaiting{Reason: "CrashLoopBackOff"}},
		LastTerminationState: corev1.ContainerState{Terminated: &corev1.ContainerStateTerminated{
			ExitCode: 1, Reason: "Error", Message: refusal, StartedAt: now, FinishedAt: now}},
		RestartCount: 1,
	}, corev1.PodPending)
	waitCondition(t, s, ns, "api", v1alpha1.ConditionRestored, backupWait,
		wantCondition(metav1.ConditionFalse, ReasonRestoreRefused, "pod api-1: the task store already holds tasks"))
	warningEvent(t, s, ns, "api", ReasonRestoreRefused, refusal)

	// The user emptied the store (deleted the claim); the next pod restores.
	if err := s.client.Delete(t.Context(), &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "api-1"}}); err != nil {
		t.Fatal(err)
	}
	var before appsv1.Deployment
	if err := get(t, s, ns, "api", &before); err != nil {
		t.Fatal(err)
	}
	depGen := before.Generation
	runRestorePod(t, s, ns, "api-2", corev1.ContainerStatus{
		State: corev1.ContainerState{Terminated: &corev1.ContainerStateTerminated{
			ExitCode: 0, Reason: "Completed", Message: `{"restored":"api-20260105T030012Z.ndjson.gz","tasks":1234}`, StartedAt: now, FinishedAt: now}},
	}, corev1.PodRunning)
	got := waitCondition(t, s, ns, "api", v1alpha1.ConditionRestored, backupWait,
		wantCondition(metav1.ConditionTrue, ReasonRestored, "restored 1234 tasks from api-20260105T030012Z.ndjson.gz"))
	if got.Status.Restore == nil || got.Status.Restore.File != "api-20260105T030012Z.ndjson.gz" {
		t.Fatalf("status.restore = %+v", got.Status.Restore)
	}
	// Finishing the restore changes nothing in the pod template: the pod
	// that restored is not rolled (a later start skips on the store's
	// record, whatever latest names by then). A change that touches only
	// the Ingress makes one more reconcile, which sees status.restore, and
	// the Deployment is looked at once it is done.
	update(t, s, ns, "api", func(m *v1alpha1.MedOpsAPI) {
		m.Spec.Ingress = &v1alpha1.IngressSpec{Enabled: true, Host: "api.example.org"}
	})
	eventually(t, wait, "the reconcile of the Ingress change", func() error {
		var m v1alpha1.MedOpsAPI
		if err := get(t, s, ns, "api", &m); err != nil {
			return err
		}
		if m.Status.ObservedGeneration != m.Generation {
			return fmt.Errorf("observedGeneration %d, generation %d", m.Status.ObservedGeneration, m.Generation)
		}
		return nil
	})
	var dep appsv1.Deployment
	if err := get(t, s, ns, "api", &dep); err != nil {
		t.Fatal(err)
	}
	if args := strings.Join(dep.Spec.Template.Spec.InitContainers[0].Args, " "); !strings.Contains(args, "--from latest ") {
		t.Errorf("restore args %q, want --from latest still", args)
	}
	if dep.Generation != depGen {
		t.Errorf("the Deployment went from generation %d to %d after the restore: its pod rolls for nothing", depGen, dep.Generation)
	}
}
