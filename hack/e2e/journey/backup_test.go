//go:build e2e

package journey

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
)

// backupName is the backup sample's MedOpsAPI, applied as shipped by the
// samples group; backupClaim is the claim its spec.backup.volume names,
// which a user makes on a USB disk or a NAS before applying it.
const (
	backupName  = "medops-backed-up"
	backupClaim = "medops-backups"
)

// drillTask is what a restore must bring back unchanged.
type drillTask struct {
	ID        string    `json:"id"`
	Title     string    `json:"title"`
	Status    string    `json:"status"`
	Version   int64     `json:"version"`
	CreatedAt time.Time `json:"createdAt"`
	UpdatedAt time.Time `json:"updatedAt"`
}

// backupChecks is issue 22's drill on real pods: tasks on the backup
// sample, a backup Job started by hand from the operator's CronJob onto a
// real PV, the MedOpsAPI and its claim deleted, the MedOpsAPI applied again
// with restore.from latest, and every task back as it was.
func (s *suite) backupChecks(t *testing.T) {
	var before []drillTask
	if !s.check(t, "the claim "+backupClaim+" the backup sample names is made, as a user makes it on a USB disk or a NAS", func(t *testing.T) {
		if err := s.applyNS(`apiVersion: v1
kind: PersistentVolumeClaim
metadata:
  name: ` + backupClaim + `
spec:
  accessModes: [ReadWriteOnce]
  resources: {requests: {storage: 64Mi}}
`); err != nil {
			t.Fatal(err)
		}
	}) {
		return
	}
	if !s.check(t, backupName+": tasks created (one of them patched twice) on the backup sample's pod", func(t *testing.T) {
		token := s.secretValue(t, backupName+"-token", "token")
		pod := s.onePod(t, backupName)
		for i := range 12 {
			r := s.do(t, podClient(), "POST", podURL(pod, "/api/v1/tasks"), token, []byte(fmt.Sprintf(`{"title":"drill %d","labels":["drill"]}`, i)))
			if r.code != 201 {
				t.Fatalf("POST: %v", r)
			}
			if i == 0 {
				for _, st := range []string{"in_progress", "done"} {
					p := s.do(t, podClient(), "PATCH", podURL(pod, "/api/v1/tasks/"+r.field("id")), token, []byte(fmt.Sprintf(`{"status":%q}`, st)))
					if p.code != 200 {
						t.Fatalf("PATCH: %v", p)
					}
				}
			}
		}
		before = s.drillTasks(t, pod, token)
		if len(before) != 12 {
			t.Fatalf("%d tasks listed, want 12", len(before))
		}
	}) {
		return
	}
	job := "drill-" + time.Now().UTC().Format("150405")
	var file string
	if !s.check(t, "kubectl create job --from=cronjob/"+backupName+"-backup: the Job completes and writes a backup onto the claim's real PV; status.backup and BackupSucceeded say so", func(t *testing.T) {
		s.kt(t, "-n", ns, "create", "job", job, "--from=cronjob/"+backupName+"-backup")
		if _, err := s.k("-n", ns, "wait", "--for=condition=Complete", "job/"+job, "--timeout="+timeoutFlag.String()); err != nil {
			t.Fatalf("%v\njob: %s\nlogs: %s", err, s.jp(t, ns, "job/"+job, "{.status}"), s.kt(t, "-n", ns, "logs", "job/"+job))
		}
		s.waitFor(t, "status.backup from the Job", time.Minute, func() error {
			got := s.jp(t, ns, "medopsapi/"+backupName, `{.status.backup.job} {.status.backup.taskCount} {.status.conditions[?(@.type=="BackupSucceeded")].status}`)
			if got != job+" 12 True" {
				return fmt.Errorf("status.backup job, taskCount and BackupSucceeded = %q, want %q", got, job+" 12 True")
			}
			return nil
		})
		file = s.jp(t, ns, "medopsapi/"+backupName, "{.status.backup.file}")
		// The file is on the PV's folder on the node (the provisioner's
		// hostPath), written by the Job's pod, not by the suite.
		dir := s.jp(t, "", "pv/"+s.jp(t, ns, "pvc/"+backupClaim, "{.spec.volumeName}"), "{.spec.hostPath.path}")
		fi, err := os.Stat(filepath.Join(dir, file))
		if err != nil || fi.Size() == 0 {
			t.Fatalf("backup file %s on the PV: %v", file, err)
		}
		t.Logf("backup %s: %d bytes on %s", file, fi.Size(), dir)
	}) {
		return
	}
	if !s.check(t, "kubectl delete medopsapi "+backupName+" and its claim "+backupName+"-data: the tasks are gone with the PV", func(t *testing.T) {
		s.kt(t, "-n", ns, "delete", "medopsapi", backupName, "--timeout="+timeoutFlag.String())
		s.waitFor(t, "no pods of "+backupName, *timeoutFlag, func() error {
			if n := len(s.pods(t, backupName)); n > 0 {
				return fmt.Errorf("%d pods left", n)
			}
			return nil
		})
		s.kt(t, "-n", ns, "delete", "pvc", backupName+"-data", "--timeout="+timeoutFlag.String())
	}) {
		return
	}
	if !s.check(t, backupName+" applied again with restore.from latest: the init container imports the backup before the API serves; Restored names the file", func(t *testing.T) {
		sample, err := os.ReadFile(filepath.Join(s.root, "config", "samples", "medops_v1alpha1_medopsapi_backup.yaml"))
		if err != nil {
			t.Fatal(err)
		}
		manifest := string(sample) + "  restore:\n    from:\n      file: latest\n"
		if err := s.applyNS(manifest); err != nil {
			t.Fatal(err)
		}
		s.waitReadyNow(t, backupName)
		eq(t, "Restored condition, status.restore.file", "True "+file,
			s.jp(t, ns, "medopsapi/"+backupName, `{.status.conditions[?(@.type=="Restored")].status} {.status.restore.file}`))
	}) {
		return
	}
	s.check(t, backupName+": every task is back with the same id, version and timestamps, and the API serves them", func(t *testing.T) {
		token := s.secretValue(t, backupName+"-token", "token")
		after := s.drillTasks(t, s.onePod(t, backupName), token)
		eq(t, "tasks after the restore", fmt.Sprint(before), fmt.Sprint(after))
	})
	s.check(t, backupName+": a restarted pod does not import twice (the store holds the restore record)", func(t *testing.T) {
		old := s.onePod(t, backupName).Name
		s.kt(t, "-n", ns, "delete", "pod", old)
		s.waitFor(t, "a new Ready pod", *timeoutFlag, func() error {
			for _, p := range s.pods(t, backupName) {
				if p.Name != old && ready(p) {
					return nil
				}
			}
			return errNotYet
		})
		token := s.secretValue(t, backupName+"-token", "token")
		eq(t, "tasks after the restart", fmt.Sprint(before), fmt.Sprint(s.drillTasks(t, s.onePod(t, backupName), token)))
		eq(t, "Restored condition", "True", s.jp(t, ns, "medopsapi/"+backupName, `{.status.conditions[?(@.type=="Restored")].status}`))
	})
}

// onePod is the only running, Ready pod of a MedOpsAPI.
func (s *suite) onePod(t *testing.T, name string) corev1.Pod {
	t.Helper()
	var rs []corev1.Pod
	for _, p := range s.pods(t, name) {
		if ready(p) {
			rs = append(rs, p)
		}
	}
	if len(rs) != 1 {
		t.Fatalf("%s: %d Ready pods, want 1", name, len(rs))
	}
	return rs[0]
}

// drillTasks lists every task of the pod, in the list's order.
func (s *suite) drillTasks(t *testing.T, pod corev1.Pod, token string) []drillTask {
	t.Helper()
	r := s.do(t, podClient(), "GET", podURL(pod, "/api/v1/tasks?limit=100"), token, nil)
	if r.code != 200 {
		t.Fatalf("list tasks: %v", r)
	}
	var page struct {
		Items []drillTask `json:"items"`
		Next  string      `json:"next"`
	}
	if err := json.Unmarshal(r.body, &page); err != nil {
		t.Fatal(err)
	}
	if page.Next != "" {
		t.Fatalf("more than one page: %s", strings.TrimSpace(string(r.body)))
	}
	return page.Items
}

// waitReadyNow waits for Ready of the current generation, as waitReady,
// inside the calling check.
func (s *suite) waitReadyNow(t *testing.T, name string) {
	t.Helper()
	if _, err := s.k("-n", ns, "wait", "--for=condition=Ready", "medopsapi/"+name, "--timeout="+timeoutFlag.String()); err != nil {
		t.Fatalf("%v\nconditions: %s", err, s.jp(t, ns, "medopsapi/"+name, "{.status.conditions}"))
	}
}
