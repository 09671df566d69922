package operator

import (
	"context"
	"encoding/json"
	"fmt"
	"sort"
	"strings"
	"time"

	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	"github.com/medops/medops/api/v1alpha1"
	"github.com/medops/medops/operator/resource"
)

// Backup and restore status, least privilege. The backup Jobs are watched
// (list/watch for the informer, cached with the children's label scope,
// see resource.Kind.Spawned): a Job that finishes wakes the MedOpsAPI. The
// result of a run is only in its pod (the JSON line `medops-api backup`
// leaves as termination message, or the log's tail on failure), and so is
// the restore's (the workload pod's init container). Pods are read with
// list, uncached, through the API reader, by label, and only when there is
// something new to read: a Job not yet reported, or a restore not yet
// done for the current spec. A watch on Pods would keep every pod of the
// MedOpsAPIs (and a grant to watch every pod of the cluster) for what is
// one list per backup; pods are never written.
//
// +kubebuilder:rbac:groups=batch,resources=jobs,verbs=list;watch
// +kubebuilder:rbac:groups="",resources=pods,verbs=list

// Reasons of the BackupSucceeded and Restored conditions, and of the
// Warning Events of failed, missed and refused runs.
const (
	ReasonBackupSucceeded = "Succeeded"
	ReasonBackupFailed    = "BackupFailed"
	ReasonScheduleMissed  = "BackupScheduleMissed"
	ReasonNoBackupYet     = "NoBackupYet"
	ReasonRestored        = "Restored"
	ReasonAlreadyRestored = "AlreadyRestored"
	ReasonRestoring       = "Restoring"
	ReasonRestoreRefused  = "RestoreRefused"
	ReasonRestoreFailed   = "RestoreFailed"
)

// labelJobControllerUID is the label the Job controller puts on a Job's
// pods: its uid, which a Job of the same name made later does not share.
const labelJobControllerUID = "batch.kubernetes.io/controller-uid"

// restoreRecheck is how often a restore that has not finished is looked
// at: a failing init container changes no object the operator watches.
const restoreRecheck = 15 * time.Second

// maxMessage bounds a pod's message copied into a condition and an Event.
const maxMessage = 512

// backupObserved is what one reconcile learnt about the backups and the
// restore. Zero means nothing was learnt: the status keeps what it had.
type backupObserved struct {
	known bool
	// backup is the new status.backup (nil keeps the old one).
	backup *v1alpha1.BackupStatus
	// succeeded and restored are the conditions; nil removes them.
	succeeded, restored *metav1.Condition
	// restore is the new status.restore.
	restore *v1alpha1.RestoreStatus
	// recheck asks for a reconcile after this long (0: none).
	recheck time.Duration
}

// mapSpawnedByInstance maps a Job of the backup CronJob (or one made from
// it with kubectl create job --from) to the MedOpsAPI named by its
// app.kubernetes.io/instance label; the cache holds only our labelled ones.
func mapSpawnedByInstance(_ context.Context, o client.Object) []reconcile.Request {
	name := o.GetLabels()[resource.LabelInstance]
	if name == "" {
		return nil
	}
	return []reconcile.Request{{NamespacedName: types.NamespacedName{Namespace: o.GetNamespace(), Name: name}}}
}

// observeBackup reads the backup Jobs, the CronJob and, when needed, the
// pods, and computes the BackupSucceeded and Restored conditions and
// status.backup. It records the Warning Events of new failures.
func (r *Reconciler) observeBackup(ctx context.Context, m *v1alpha1.MedOpsAPI) (backupObserved, error) {
	obs := backupObserved{known: true, backup: m.Status.Backup, restore: m.Status.Restore}
	if m.Spec.BackupEnabled() {
		if err := r.observeBackupJobs(ctx, m, &obs); err != nil {
			return backupObserved{}, err
		}
	}
	if m.Spec.Restore != nil {
		if err := r.observeRestore(ctx, m, &obs); err != nil {
			return backupObserved{}, err
		}
	} else {
		obs.restore = nil
	}
	return obs, nil
}

func (r *Reconciler) observeBackupJobs(ctx context.Context, m *v1alpha1.MedOpsAPI, obs *backupObserved) error {
	var jobs batchv1.JobList
	if err := r.Client.List(ctx, &jobs, client.InNamespace(m.Namespace), client.MatchingLabels{
		resource.LabelInstance: m.Name, resource.LabelComponent: resource.ComponentBackup,
	}); err != nil {
		return fmt.Errorf("list backup Jobs: %w", err)
	}
	// Newest first; a finished Job's outcome is its Complete or Failed
	// condition.
	sort.Slice(jobs.Items, func(i, j int) bool {
		a, b := jobs.Items[i].CreationTimestamp, jobs.Items[j].CreationTimestamp
		if !a.Equal(&b) {
			return b.Before(&a)
		}
		return jobs.Items[i].Name > jobs.Items[j].Name
	})
	var lastDone, lastComplete *batchv1.Job
	for i := range jobs.Items {
		j := &jobs.Items[i]
		done, ok := jobFinished(j)
		if !done {
			continue
		}
		if lastDone == nil {
			lastDone = j
		}
		if ok && lastComplete == nil {
			lastComplete = j
		}
	}
	gen := m.Generation
	old := meta.FindStatusCondition(m.Status.Conditions, v1alpha1.ConditionBackupSucceeded)

	if lastComplete != nil && (m.Status.Backup == nil || m.Status.Backup.Job != lastComplete.Name) {
		st, err := r.completedBackup(ctx, lastComplete)
		if err != nil {
			return err
		}
		obs.backup = st
	}

	var cond metav1.Condition
	switch {
	case lastDone == nil:
		cond = metav1.Condition{Status: metav1.ConditionUnknown, Reason: ReasonNoBackupYet, Message: "no backup Job has finished yet"}
	case lastDone == lastComplete:
		b := obs.backup
		msg := "Job " + lastDone.Name + " wrote and verified a backup"
		if b != nil && b.Job == lastDone.Name && b.File != "" {
			msg = fmt.Sprintf("Job %s wrote and verified %s", lastDone.Name, b.File)
			if b.TaskCount != nil {
				msg += fmt.Sprintf(" (%d tasks)", *b.TaskCount)
			}
		}
		cond = metav1.Condition{Status: metav1.ConditionTrue, Reason: ReasonBackupSucceeded, Message: msg}
	default:
		msg := "Job " + lastDone.Name + " failed"
		if old != nil && old.Reason == ReasonBackupFailed && strings.HasPrefix(old.Message, msg+":") {
			msg = old.Message // already read; its pods need not be listed again
		} else {
			why, err := r.failedBackup(ctx, lastDone)
			if err != nil {
				return err
			}
			msg += ": " + why
		}
		cond = metav1.Condition{Status: metav1.ConditionFalse, Reason: ReasonBackupFailed, Message: msg}
	}

	// A run the CronJob controller could not start in time (its controller
	// or the node was down, or the previous run still ran) leaves no Job:
	// only the schedule tells.
	var cj batchv1.CronJob
	err := r.Client.Get(ctx, types.NamespacedName{Namespace: m.Namespace, Name: resource.BackupCronJobName(m)}, &cj)
	switch {
	case apierrors.IsNotFound(err):
	case err != nil:
		return fmt.Errorf("read backup CronJob: %w", err)
	default:
		if sched, perr := parseCron(cj.Spec.Schedule); perr == nil && len(cj.Status.Active) == 0 {
			last := cj.CreationTimestamp.Time
			if cj.Status.LastScheduleTime != nil {
				last = cj.Status.LastScheduleTime.Time
			}
			deadline := time.Duration(resource.BackupStartingDeadlineSeconds) * time.Second
			due, missed, recheck := missedRun(sched, last, time.Now(), deadline)
			if missed {
				cond = metav1.Condition{Status: metav1.ConditionFalse, Reason: ReasonScheduleMissed, Message: fmt.Sprintf(
					"the backup due at %s did not start within %s (was the cluster or the node down?); the last finished Job is %s",
					due.UTC().Format(time.RFC3339), deadline, jobName(lastDone))}
			} else if recheck > 0 {
				// Look again just after the next run's deadline.
				obs.recheck = recheck + time.Minute
			}
		}
	}
	cond.Type, cond.ObservedGeneration = v1alpha1.ConditionBackupSucceeded, gen
	if cond.Status == metav1.ConditionFalse && (old == nil || old.Message != cond.Message) {
		var related client.Object
		if cond.Reason == ReasonBackupFailed {
			related = lastDone
		}
		r.backupEvent(m, related, cond.Reason, cond.Message)
	}
	obs.succeeded = &cond
	return nil
}

// backupEvent records the Warning Event of a failed or missed backup, or
// a refused restore.
func (r *Reconciler) backupEvent(m *v1alpha1.MedOpsAPI, related client.Object, reason, msg string) {
	if related == nil {
		r.event(m, nil, corev1.EventTypeWarning, reason, "Backup", "%s", msg)
		return
	}
	r.event(m, related, corev1.EventTypeWarning, reason, "Backup", "%s", msg)
}

func jobName(j *batchv1.Job) string {
	if j == nil {
		return "none"
	}
	return j.Name
}

// jobFinished reports whether the Job is done, and whether it succeeded.
func jobFinished(j *batchv1.Job) (done, ok bool) {
	for _, c := range j.Status.Conditions {
		if c.Status != corev1.ConditionTrue {
			continue
		}
		switch c.Type {
		case batchv1.JobComplete:
			return true, true
		case batchv1.JobFailed:
			return true, false
		}
	}
	return false, false
}

// backupResult is the JSON line `medops-api backup` writes to its
// termination log.
type backupResult struct {
	File  string    `json:"file"`
	Tasks *int64    `json:"tasks"`
	Time  time.Time `json:"time"`
}

// completedBackup reads what a successful Job wrote from its pod's
// terminated message. A pod already gone (its node was removed) still
// leaves the Job's completion time.
func (r *Reconciler) completedBackup(ctx context.Context, j *batchv1.Job) (*v1alpha1.BackupStatus, error) {
	st := &v1alpha1.BackupStatus{Job: j.Name, LastSuccessfulTime: j.Status.CompletionTime}
	pods, err := r.jobPods(ctx, j)
	if err != nil {
		return nil, err
	}
	for _, p := range pods {
		t := terminated(p.Status.ContainerStatuses, resource.BackupContainerName)
		if t == nil || t.ExitCode != 0 {
			continue
		}
		var res backupResult
		if err := json.Unmarshal([]byte(lastLine(t.Message)), &res); err != nil || res.File == "" {
			continue
		}
		st.File, st.TaskCount = res.File, res.Tasks
		if !res.Time.IsZero() {
			st.LastSuccessfulTime = &metav1.Time{Time: res.Time}
		}
		break
	}
	if st.LastSuccessfulTime == nil {
		st.LastSuccessfulTime = &j.CreationTimestamp
	}
	return st, nil
}

// failedBackup says why a Job failed: its newest failed pod's message
// (medops-api's error, the tail of its log), else the Job's own reason.
func (r *Reconciler) failedBackup(ctx context.Context, j *batchv1.Job) (string, error) {
	pods, err := r.jobPods(ctx, j)
	if err != nil {
		return "", err
	}
	for _, p := range pods {
		if t := terminated(p.Status.ContainerStatuses, resource.BackupContainerName); t != nil && t.ExitCode != 0 {
			if msg := clip(t.Message); msg != "" {
				return msg, nil
			}
			return fmt.Sprintf("pod %s exited with code %d (%s)", p.Name, t.ExitCode, t.Reason), nil
		}
	}
	for _, c := range j.Status.Conditions {
		if c.Type == batchv1.JobFailed && c.Status == corev1.ConditionTrue {
			return fmt.Sprintf("%s: %s", c.Reason, c.Message), nil
		}
	}
	return "no pod left to tell why", nil
}

// jobPods lists a Job's pods, newest first.
func (r *Reconciler) jobPods(ctx context.Context, j *batchv1.Job) ([]corev1.Pod, error) {
	var pods corev1.PodList
	if err := r.APIReader.List(ctx, &pods, client.InNamespace(j.Namespace),
		client.MatchingLabels{labelJobControllerUID: string(j.UID)}); err != nil {
		return nil, fmt.Errorf("list pods of Job %s: %w", j.Name, err)
	}
	newestFirst(pods.Items)
	return pods.Items, nil
}

func newestFirst(pods []corev1.Pod) {
	sort.Slice(pods, func(i, j int) bool {
		a, b := pods[i].CreationTimestamp, pods[j].CreationTimestamp
		if !a.Equal(&b) {
			return b.Before(&a)
		}
		return pods[i].Name > pods[j].Name
	})
}

// terminated is the last termination of the named container: its current
// state, or the one before a restart.
func terminated(statuses []corev1.ContainerStatus, name string) *corev1.ContainerStateTerminated {
	for _, cs := range statuses {
		if cs.Name != name {
			continue
		}
		if t := cs.State.Terminated; t != nil {
			return t
		}
		return cs.LastTerminationState.Terminated
	}
	return nil
}

// restoreResult is the JSON line `medops-api restore` writes.
type restoreResult struct {
	Restored string `json:"restored"`
	Skipped  string `json:"skipped"`
	File     string `json:"file"`
	Tasks    *int64 `json:"tasks"`
}

// observeRestore reads the restore init container of the workload pods.
// Once True for the current generation, the pods are not listed again: a
// restarted pod finds its marker and goes on, which changes nothing.
func (r *Reconciler) observeRestore(ctx context.Context, m *v1alpha1.MedOpsAPI, obs *backupObserved) error {
	gen := m.Generation
	old := meta.FindStatusCondition(m.Status.Conditions, v1alpha1.ConditionRestored)
	if old != nil && old.Status == metav1.ConditionTrue && old.ObservedGeneration == gen {
		obs.restored = old.DeepCopy()
		return nil
	}
	var pods corev1.PodList
	if err := r.APIReader.List(ctx, &pods, client.InNamespace(m.Namespace), client.MatchingLabels(resource.SelectorLabels(m))); err != nil {
		return fmt.Errorf("list pods for the restore: %w", err)
	}
	newestFirst(pods.Items)
	cond := metav1.Condition{Status: metav1.ConditionUnknown, Reason: ReasonRestoring,
		Message: "waiting for the restore init container of a workload pod to finish"}
	for _, p := range pods.Items {
		t := terminated(p.Status.InitContainerStatuses, resource.RestoreContainerName)
		if t == nil {
			continue
		}
		var file string
		cond, file = restoreCondition(&p, t)
		if file != "" {
			obs.restore = &v1alpha1.RestoreStatus{File: file}
		}
		break
	}
	if cond.Status == metav1.ConditionUnknown && old != nil && old.Status == metav1.ConditionTrue {
		// A new generation whose pods have not run yet: the store is
		// restored already.
		cond = *old
	}
	cond.Type, cond.ObservedGeneration = v1alpha1.ConditionRestored, gen
	if cond.Status == metav1.ConditionFalse && (old == nil || old.Message != cond.Message) {
		r.backupEvent(m, nil, cond.Reason, cond.Message)
	}
	if cond.Status != metav1.ConditionTrue {
		obs.recheck = soonerRecheck(obs.recheck, restoreRecheck)
	}
	obs.restored = &cond
	return nil
}

// restoreCondition reads one pod's restore outcome, and the file restored.
func restoreCondition(p *corev1.Pod, t *corev1.ContainerStateTerminated) (metav1.Condition, string) {
	if t.ExitCode != 0 {
		msg := clip(t.Message)
		if msg == "" {
			msg = fmt.Sprintf("exit code %d (%s)", t.ExitCode, t.Reason)
		}
		if strings.Contains(msg, "not empty") {
			return metav1.Condition{Status: metav1.ConditionFalse, Reason: ReasonRestoreRefused, Message: fmt.Sprintf(
				"pod %s: the task store already holds tasks and no record of this backup, so the restore refused to import over them (%s); remove spec.restore to serve the tasks it holds, or start from an empty store", p.Name, msg)}, ""
		}
		return metav1.Condition{Status: metav1.ConditionFalse, Reason: ReasonRestoreFailed, Message: fmt.Sprintf("pod %s: %s", p.Name, msg)}, ""
	}
	var res restoreResult
	if err := json.Unmarshal([]byte(lastLine(t.Message)), &res); err == nil {
		switch {
		case res.Restored != "":
			msg := "restored " + res.Restored
			if res.Tasks != nil {
				msg = fmt.Sprintf("restored %d tasks from %s", *res.Tasks, res.Restored)
			}
			return metav1.Condition{Status: metav1.ConditionTrue, Reason: ReasonRestored, Message: msg}, res.Restored
		case res.Skipped != "":
			return metav1.Condition{Status: metav1.ConditionTrue, Reason: ReasonAlreadyRestored,
				Message: fmt.Sprintf("%s was restored before; nothing imported again", res.File)}, res.File
		}
	}
	return metav1.Condition{Status: metav1.ConditionTrue, Reason: ReasonRestored, Message: "the restore init container of pod " + p.Name + " succeeded"}, ""
}

// setBackupConditions writes what observeBackup learnt into the status.
func setBackupConditions(status *v1alpha1.MedOpsAPIStatus, obs backupObserved) {
	if !obs.known {
		return
	}
	status.Backup = obs.backup
	status.Restore = obs.restore
	for typ, c := range map[string]*metav1.Condition{
		v1alpha1.ConditionBackupSucceeded: obs.succeeded,
		v1alpha1.ConditionRestored:        obs.restored,
	} {
		if c == nil {
			meta.RemoveStatusCondition(&status.Conditions, typ)
			continue
		}
		meta.SetStatusCondition(&status.Conditions, *c)
	}
}

// requeue adds the backup's recheck to a reconcile's result.
func (o backupObserved) requeue(res reconcile.Result) reconcile.Result {
	if o.recheck > 0 {
		res.RequeueAfter = soonerRecheck(res.RequeueAfter, o.recheck)
	}
	return res
}

// soonerRecheck is the sooner of two recheck delays, where 0 means none.
func soonerRecheck(a, b time.Duration) time.Duration {
	if a == 0 || (b > 0 && b < a) {
		return b
	}
	return a
}

// lastLine is the last non-empty line of a termination message.
func lastLine(s string) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	return strings.TrimSpace(lines[len(lines)-1])
}

// clip keeps the end of a long message: the error is the last line.
func clip(s string) string {
	s = strings.TrimSpace(s)
	if len(s) > maxMessage {
		s = "…" + s[len(s)-maxMessage:]
	}
	return s
}
