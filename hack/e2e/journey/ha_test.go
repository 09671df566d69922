//go:build e2e

package journey

import (
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/yaml"

	"github.com/medops/medops/api/v1alpha1"
	"github.com/medops/medops/hack/e2e/cluster"
	"github.com/medops/medops/internal/pgtest"
	"github.com/medops/medops/operator/resource"
)

// The HA sample (config/samples/medops_v1alpha1_medopsapi_ha.yaml), applied
// as it is by the samples group with the Secret medops-db-app the suite
// made (the uri of its PostgreSQL on the node's address).
const haName = "medops-ha"

// haChecks (issue 10 item 6, issue 19 item 3): the HA sample's pods keep
// their tasks in the suite's real PostgreSQL; three of them run for real on
// both architectures, behind nginx, which balances across them, and every
// read on every replica finds every task.
//
// As applied, the sample's hard spread over hostnames (maxSkew 1) places its
// 3 replicas on the two nodes, 2 and 1: real pods on amd64 and on pi-1,
// with nothing patched.
func (s *suite) haChecks(t *testing.T) {
	token := s.secretValue(t, haName+"-token", "token")
	var pods []realPod
	if !s.check(t, "medops-ha as applied: its own spread constraints put its 3 replicas on both nodes (amd64 and pi-1), all running for real on PostgreSQL, with no claim", func(t *testing.T) {
		s.kt(t, "-n", ns, "rollout", "status", "deploy/"+haName, "--timeout="+timeoutFlag.String())
		pods = s.realPods(t, haName)
		perNode := map[string]int{}
		for _, p := range pods {
			perNode[p.pod.Spec.NodeName]++
			s.checkPostgresPod(t, p.pod)
		}
		eq(t, "replicas", 3, len(pods))
		if perNode[s.c.NodeName] == 0 || perNode[cluster.PiName] == 0 || len(perNode) != 2 {
			t.Errorf("replicas per node %v, want some on %s and some on %s", perNode, s.c.NodeName, cluster.PiName)
		}
		t.Logf("replicas per node: %v", perNode)
		if _, err := s.k("-n", ns, "get", "pvc", haName+"-data"); err == nil {
			t.Error("a claim medops-ha-data exists: with storage.postgres there must be none")
		}
		s.waitReady(t, haName)
	}) {
		return
	}
	onNode := func(node string) corev1.Pod {
		for _, p := range pods {
			if p.pod.Spec.NodeName == node {
				return p.pod
			}
		}
		t.Fatalf("no replica on %s", node)
		return corev1.Pod{}
	}
	var firstID string
	s.check(t, "medops-ha: a task written on the amd64 replica is read on the arm64 one, and the other way round (one PostgreSQL)", func(t *testing.T) {
		amd, arm := onNode(s.c.NodeName), onNode(cluster.PiName)
		for _, dir := range []struct{ from, to corev1.Pod }{{amd, arm}, {arm, amd}} {
			title := "written on " + dir.from.Spec.NodeName
			r := s.do(t, podClient(), "POST", podURL(dir.from, "/api/v1/tasks"), token, []byte(fmt.Sprintf(`{"title":%q}`, title)))
			id := r.field("id")
			if r.code != 201 || id == "" {
				t.Fatalf("POST on %s: %v", dir.from.Name, r)
			}
			if firstID == "" {
				firstID = id
			}
			g := s.do(t, podClient(), "GET", podURL(dir.to, "/api/v1/tasks/"+id), token, nil)
			eq(t, "read on "+dir.to.Spec.NodeName, "200 "+title, fmt.Sprint(g.code, " ", g.field("title")))
			eq(t, "rows in PostgreSQL with that id", 1, s.pgCount(t, "SELECT count(*) FROM medops_tasks WHERE id = $1", id))
		}
	})
	s.check(t, "medops-ha: pods on the two nodes reach each other by pod IP (kubectl exec medops-api export across the bridges, both ways)", func(t *testing.T) {
		if firstID == "" {
			t.Skip("no task was created")
		}
		amd, arm := onNode(s.c.NodeName), onNode(cluster.PiName)
		for _, dir := range []struct{ in, to corev1.Pod }{{arm, amd}, {amd, arm}} {
			// The export runs inside one pod's network namespace and calls the
			// other pod's IP: traffic between the two pod ranges, pod to pod.
			url := "http://" + net.JoinHostPort(dir.to.Status.PodIP, "8080")
			out := s.kt(t, "-n", ns, "exec", dir.in.Name, "--", "/medops-api", "export", "--url", url, "--token-file", resource.TokenFile)
			if !strings.Contains(out, firstID) {
				t.Errorf("export from %s (%s) run in %s (%s) lacks task %s:\n%.400s", dir.to.Name, dir.to.Spec.NodeName, dir.in.Name, dir.in.Spec.NodeName, firstID, out)
			}
		}
	})
	s.check(t, "medops-ha: each of the 3 processes runs with the config the operator rendered (ConfigMap) and reads the DSN from the Secret", func(t *testing.T) {
		d := s.deployment(t, haName)
		cfgDir := mountOf(d, func(v corev1.VolumeSource) bool { return v.ConfigMap != nil })
		var cm corev1.ConfigMap
		s.getJSON(t, ns, "cm/"+haName+"-config", &cm)
		cfg := s.renderedConfig(t, cm)
		dsn := s.secretValue(t, "medops-db-app", "uri")
		for _, p := range pods {
			for k, v := range cm.Data {
				got, err := os.ReadFile(fmt.Sprintf("/proc/%d/root%s/%s", p.pid, cfgDir, k))
				if err != nil {
					t.Fatal(err)
				}
				eq(t, p.pod.Name+": mounted "+k, v, string(got))
			}
			got, err := os.ReadFile(fmt.Sprintf("/proc/%d/root%s", p.pid, cfg.Postgres.DSNFile))
			if err != nil {
				t.Fatal(err)
			}
			if strings.TrimSpace(string(got)) != dsn {
				t.Errorf("%s: %s is not the Secret's uri", p.pod.Name, cfg.Postgres.DSNFile)
			}
		}
	})
	s.check(t, "medops-ha: those tasks are on every replica", func(t *testing.T) {
		if firstID == "" {
			t.Skip("no task was created")
		}
		for _, p := range pods {
			r := s.do(t, podClient(), "GET", podURL(p.pod, "/api/v1/tasks/"+firstID), token, nil)
			eq(t, p.pod.Name, 200, r.code)
		}
	})

	var endpoints []string
	for _, p := range pods {
		endpoints = append(endpoints, net.JoinHostPort(p.pod.Status.PodIP, strconv.Itoa(int(p.pod.Spec.Containers[0].Ports[0].ContainerPort))))
	}
	dir := filepath.Join(s.work, "nginx-ha")
	ports, err := cluster.FreePorts(1)
	if err != nil {
		t.Fatal(err)
	}
	listen := fmt.Sprintf("127.0.0.1:%d", ports[0])
	host := s.jp(t, ns, "ingress/"+haName, "{.spec.rules[0].host}")
	if !s.check(t, "nginx for medops-ha's Ingress, balancing round robin across its 3 pods' endpoints (as ingress-nginx does)", func(t *testing.T) {
		conf := s.renderNginx(t, haName, dir, listen, "", endpoints...)
		for _, e := range endpoints {
			if !strings.Contains(conf, "server "+e+";") {
				t.Errorf("nginx.conf has no upstream server %s", e)
			}
		}
		s.startNginx(t, "nginx-ha", dir, listen)
	}) {
		return
	}
	hc := client(host, listen)
	base := "http://" + host
	const n = 30
	var ids []string
	s.check(t, fmt.Sprintf("medops-ha: %d tasks created through nginx; after each, a read on every replica finds it at once", n), func(t *testing.T) {
		for i := range n {
			title := fmt.Sprintf("HA task %d", i)
			r := s.do(t, hc, "POST", base+"/api/v1/tasks", token, []byte(fmt.Sprintf(`{"title":%q}`, title)))
			id := r.field("id")
			if r.code != 201 || id == "" {
				t.Fatalf("POST %d through nginx: %v", i, r)
			}
			ids = append(ids, id)
			for _, p := range pods {
				g := s.do(t, podClient(), "GET", podURL(p.pod, "/api/v1/tasks/"+id), token, nil)
				if got := fmt.Sprint(g.code, " ", g.field("title"), " ", g.field("version")); got != "200 "+title+" "+r.field("version") {
					t.Errorf("task %s created through nginx, read on %s: %s, want 200 %s %s", id, p.pod.Name, got, title, r.field("version"))
				}
			}
		}
	})
	s.check(t, "nginx balanced the creates across all 3 pods (its access log's upstream addresses)", func(t *testing.T) {
		b, err := os.ReadFile(filepath.Join(dir, "access.log"))
		if err != nil {
			t.Fatal(err)
		}
		served := map[string]int{}
		re := regexp.MustCompile(`"POST /api/v1/tasks HTTP/1\.1" 201 upstream=(\S+)`)
		for _, m := range re.FindAllStringSubmatch(string(b), -1) {
			served[m[1]]++
		}
		for _, e := range endpoints {
			if served[e] == 0 {
				t.Errorf("pod %s served none of the creates: %v", e, served)
			}
		}
		t.Logf("creates per pod: %v", served)
	})
	s.check(t, "medops-ha: every replica's task list holds every task, and every read through nginx finds it", func(t *testing.T) {
		if len(ids) == 0 {
			t.Fatal("no tasks were created")
		}
		want := append([]string{}, ids...)
		for _, id := range s.pgIDs(t, "SELECT id FROM medops_tasks WHERE body->>'title' LIKE 'written on %'") {
			want = append(want, id)
		}
		slices.Sort(want)
		for _, p := range pods {
			r := s.do(t, podClient(), "GET", podURL(p.pod, "/api/v1/tasks?limit=200"), token, nil)
			var list struct {
				Items []struct {
					ID string `json:"id"`
				} `json:"items"`
			}
			if r.code != 200 || json.Unmarshal(r.body, &list) != nil {
				t.Fatalf("list on %s: %v", p.pod.Name, r)
			}
			var got []string
			for _, it := range list.Items {
				got = append(got, it.ID)
			}
			slices.Sort(got)
			eq(t, "ids listed by "+p.pod.Name, want, got)
		}
		for _, id := range ids {
			if r := s.do(t, hc, "GET", base+"/api/v1/tasks/"+id, token, nil); r.code != 200 || r.field("id") != id {
				t.Errorf("GET %s through nginx: %v", id, r)
			}
		}
		eq(t, "rows in PostgreSQL", len(want), s.pgCount(t, "SELECT count(*) FROM medops_tasks"))
	})
}

// checkPostgresPod: the pod's rendered config selects the PostgreSQL store
// with a DSN file from the Secret's volume, and /readyz answers 200 on the
// pod's IP (medops-api fails it while the database is unreachable).
func (s *suite) checkPostgresPod(t *testing.T, p corev1.Pod) {
	t.Helper()
	var cm corev1.ConfigMap
	s.getJSON(t, ns, "cm/"+haName+"-config", &cm)
	cfg := s.renderedConfig(t, cm)
	if cfg.Postgres == nil || cfg.Postgres.DSNFile == "" {
		t.Fatalf("the rendered config has no postgres.dsnFile:\n%v", cm.Data)
	}
	if r := s.do(t, podClient(), "GET", podURL(p, "/readyz"), "", nil); r.code != 200 {
		t.Errorf("%s /readyz: %v", p.Name, r)
	}
}

// renderedConfig decodes the config file of a MedOpsAPI's ConfigMap into
// the type medops-api reads.
func (s *suite) renderedConfig(t *testing.T, cm corev1.ConfigMap) v1alpha1.WorkloadConfig {
	t.Helper()
	if len(cm.Data) != 1 {
		t.Fatalf("ConfigMap %s has %d keys, want the one config file", cm.Name, len(cm.Data))
	}
	var cfg v1alpha1.WorkloadConfig
	for k, v := range cm.Data {
		if err := yaml.Unmarshal([]byte(v), &cfg); err != nil {
			t.Fatalf("%s: %v", k, err)
		}
	}
	return cfg
}

// pgIDs runs a query of ids as the superuser of the suite's PostgreSQL.
func (s *suite) pgIDs(t *testing.T, sql string) []string {
	t.Helper()
	c, err := pgx.Connect(s.ctx, s.pg.DSN(pgtest.Database))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close(s.ctx)
	rows, err := c.Query(s.ctx, sql)
	if err != nil {
		t.Fatal(err)
	}
	ids, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		t.Fatal(err)
	}
	return ids
}

// pgCount runs a count query as the superuser of the suite's PostgreSQL.
func (s *suite) pgCount(t *testing.T, sql string, args ...any) int {
	t.Helper()
	c, err := pgx.Connect(s.ctx, s.pg.DSN(pgtest.Database))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close(s.ctx)
	var n int
	if err := c.QueryRow(s.ctx, sql, args...).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

// podClient talks to pod IPs directly (the host routes the pod range to the
// bridge).
func podClient() *http.Client { return &http.Client{Timeout: 30 * time.Second} }

func podURL(p corev1.Pod, path string) string {
	return "http://" + net.JoinHostPort(p.Status.PodIP, strconv.Itoa(int(p.Spec.Containers[0].Ports[0].ContainerPort))) + path
}

// startNginx runs nginx with dir/nginx.conf as a process of the cluster
// and waits until it listens.
func (s *suite) startNginx(t *testing.T, name, dir, listen string) {
	t.Helper()
	if err := s.c.StartProcess(name, nil, s.tools.nginx, "-p", dir, "-c", filepath.Join(dir, "nginx.conf"), "-g", "daemon off;"); err != nil {
		t.Fatal(err)
	}
	s.waitFor(t, name+" to listen", 30*time.Second, func() error {
		if !s.c.Alive(name) {
			return fmt.Errorf("%s exited (see %s)", name, s.c.LogFile(name))
		}
		conn, err := net.DialTimeout("tcp", listen, time.Second)
		if err == nil {
			conn.Close()
		}
		return err
	})
}
