package operator

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-logr/logr"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/rand"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
	ctrllog "sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"
	"sigs.k8s.io/yaml"

	"github.com/medops/medops/api/v1alpha1"
	"github.com/medops/medops/internal/repo"
	"github.com/medops/medops/internal/testenv"
)

// The envtest suite runs one real kube-apiserver and etcd and, against it,
// the operator's manager exactly as cmd/medops-operator builds it
// (NewManager). It starts lazily, on the first test that asks for it, so the
// package's pure builder tests do not wait for a control plane.

type envSuite struct {
	env    *envtest.Environment
	cfg    *rest.Config
	client client.Client // the tests' own client: its writes are not counted
	cache  client.Reader // the operator's informer cache, to check what it holds
	writes *writeCounter // counts the operator's writes to the apiserver
	// reconciles records each reconcile the operator runs, with its writes.
	reconciles *reconcileLog
	// opKubeconfig is a kubeconfig of the operator's user, for kubectl.
	opKubeconfig []byte
	cancel       context.CancelFunc
	done         chan error
}

var (
	suiteOnce sync.Once
	suiteVal  *envSuite
	suiteErr  error
)

// TestMain stops the control plane after all tests, if one was started.
func TestMain(m *testing.M) {
	code := m.Run()
	if suiteVal != nil {
		suiteVal.cancel()
		select {
		case err := <-suiteVal.done:
			if err != nil {
				fmt.Fprintln(os.Stderr, "manager stopped with error:", err)
			}
		case <-time.After(20 * time.Second):
			fmt.Fprintln(os.Stderr, "manager did not stop within 20s")
		}
		if err := suiteVal.env.Stop(); err != nil {
			fmt.Fprintln(os.Stderr, "stop control plane:", err)
		}
	}
	os.Exit(code)
}

// suite returns the shared control plane with the operator running on it.
func suite(t *testing.T) *envSuite {
	t.Helper()
	suiteOnce.Do(func() { suiteVal, suiteErr = startSuite() })
	if suiteErr != nil {
		t.Fatalf("start envtest suite: %v", suiteErr)
	}
	return suiteVal
}

func startSuite() (*envSuite, error) {
	// Gateway API and the ServiceMonitor are served here, so every child
	// kind is managed; TestOptionalKindsMissing runs a control plane of its
	// own without them.
	gatewayCRDs, err := testenv.GatewayAPICRDs()
	if err != nil {
		return nil, err
	}
	monitoringCRD, err := testenv.MonitoringCRD()
	if err != nil {
		return nil, err
	}
	env, cfg, err := testenv.Start(append([]string{testenv.CRDDir(), monitoringCRD}, gatewayCRDs...)...)
	if err != nil {
		return nil, err
	}
	s := &envSuite{env: env, cfg: cfg, writes: &writeCounter{}, done: make(chan error, 1)}
	s.reconciles = &reconcileLog{writes: s.writes}
	fail := func(err error) (*envSuite, error) {
		_ = env.Stop()
		return nil, err
	}
	scheme, err := NewScheme()
	if err != nil {
		return fail(err)
	}
	if s.client, err = client.New(cfg, client.Options{Scheme: scheme}); err != nil {
		return fail(fmt.Errorf("test client: %w", err))
	}

	// The operator runs as its own user, bound to nothing but the
	// ClusterRole that `make manifests` generates from the RBAC markers: a
	// missing verb fails the suite, so the role is proven sufficient.
	user, err := env.AddUser(envtest.User{Name: "medops-operator", Groups: []string{"system:authenticated"}}, nil)
	if err != nil {
		return fail(fmt.Errorf("add operator user: %w", err))
	}
	if err := bindGeneratedRole(s.client, "medops-operator"); err != nil {
		return fail(err)
	}
	if s.opKubeconfig, err = user.KubeConfig(); err != nil {
		return fail(fmt.Errorf("operator user's kubeconfig: %w", err))
	}
	// Its transport counts writes: the real client, only observed.
	opCfg := rest.CopyConfig(user.Config())
	opCfg.WrapTransport = func(rt http.RoundTripper) http.RoundTripper {
		return &countingTransport{next: rt, c: s.writes}
	}
	level := slog.LevelWarn
	if os.Getenv("MEDOPS_TEST_DEBUG") != "" {
		level = slog.LevelDebug
	}
	logger := logr.FromSlogHandler(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))
	ctrllog.SetLogger(logger) // as main does; client-go's reflectors log through it
	mgr, err := NewManager(opCfg, Options{
		MetricsBindAddress:      "0",
		HealthProbeBindAddress:  "0",
		MaxConcurrentReconciles: 4,
		Logger:                  logger,
		SkipNameValidation:      true,
		wrap:                    s.reconciles.wrap,
	})
	if err != nil {
		return fail(err)
	}
	s.cache = mgr.GetCache()
	ctx, cancel := context.WithCancel(context.Background())
	s.cancel = cancel
	go func() { s.done <- mgr.Start(ctx) }()
	syncCtx, stop := context.WithTimeout(ctx, 30*time.Second)
	defer stop()
	if !mgr.GetCache().WaitForCacheSync(syncCtx) {
		cancel()
		return fail(fmt.Errorf("operator caches did not sync"))
	}
	return s, nil
}

// writeCounter counts the operator's create, update, patch and delete
// requests per resource path. Events and leader-election Leases are left
// out: they are not children or status.
type writeCounter struct {
	mu     sync.Mutex
	total  atomic.Int64
	byPath map[string]int
}

func (w *writeCounter) add(method, path string) {
	if strings.Contains(path, "/events") || strings.Contains(path, "/leases") {
		return
	}
	w.total.Add(1)
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.byPath == nil {
		w.byPath = map[string]int{}
	}
	w.byPath[method+" "+path]++
}

// snapshot returns the writes so far whose path contains sub.
func (w *writeCounter) snapshot(sub string) map[string]int {
	w.mu.Lock()
	defer w.mu.Unlock()
	out := map[string]int{}
	for k, v := range w.byPath {
		if strings.Contains(k, sub) {
			out[k] = v
		}
	}
	return out
}

type countingTransport struct {
	next http.RoundTripper
	c    *writeCounter
}

func (t *countingTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	switch req.Method {
	case http.MethodPost, http.MethodPut, http.MethodPatch, http.MethodDelete:
		t.c.add(req.Method, req.URL.Path)
	}
	return t.next.RoundTrip(req)
}

// inNamespace counts the writes so far to objects of namespace ns.
func (w *writeCounter) inNamespace(ns string) int {
	n := 0
	for _, v := range w.snapshot("/namespaces/" + ns + "/") {
		n += v
	}
	return n
}

// reconcileLog records the reconciles an operator runs: which object, how
// many writes the operator made to its namespace meanwhile (one MedOpsAPI
// per namespace in these tests, and reconciles of one object never
// overlap, so they are that reconcile's), and what it returned.
type reconcileLog struct {
	writes *writeCounter

	mu      sync.Mutex
	started int // reconciles started so far
	done    []reconcileRecord
}

type reconcileRecord struct {
	key types.NamespacedName
	// seq numbers the reconcile by its start: 1 is the first to start.
	seq    int
	writes int
	result reconcile.Result
	err    error
}

// quiet reports whether the reconcile wrote nothing and asked for nothing
// more: after it, only a new event can make the operator act.
func (r reconcileRecord) quiet() bool {
	return r.writes == 0 && r.err == nil && r.result.IsZero()
}

// wrap is Options.wrap: it records every reconcile of inner.
func (l *reconcileLog) wrap(inner reconcile.Reconciler) reconcile.Reconciler {
	return reconcile.Func(func(ctx context.Context, req reconcile.Request) (reconcile.Result, error) {
		l.mu.Lock()
		l.started++
		seq := l.started
		l.mu.Unlock()
		before := l.writes.inNamespace(req.Namespace)
		res, err := inner.Reconcile(ctx, req)
		rec := reconcileRecord{key: req.NamespacedName, seq: seq, writes: l.writes.inNamespace(req.Namespace) - before, result: res, err: err}
		l.mu.Lock()
		l.done = append(l.done, rec)
		l.mu.Unlock()
		return res, err
	})
}

// next pokes the controller and returns the reconciles of key that
// started after the poke, once there is at least one.
func (l *reconcileLog) next(t *testing.T, key types.NamespacedName, poke func(i int), i int) []reconcileRecord {
	t.Helper()
	l.mu.Lock()
	mark := l.started
	l.mu.Unlock()
	poke(i)
	var recs []reconcileRecord
	eventually(t, wait, "a reconcile of "+key.String()+" after the poke", func() error {
		l.mu.Lock()
		defer l.mu.Unlock()
		recs = recs[:0]
		for _, r := range l.done {
			if r.key == key && r.seq > mark {
				recs = append(recs, r)
			}
		}
		if len(recs) == 0 {
			return errors.New("none yet")
		}
		return nil
	})
	return recs
}

// converge waits until the operator has converged on the MedOpsAPI key: a
// whole reconcile of it wrote nothing and asked for no requeue. poke makes
// the controller reconcile key without changing what it renders (a label on
// the MedOpsAPI), since a converged operator has no reason to run on its
// own; it pokes again while the reconciles that follow still write.
func (l *reconcileLog) converge(t *testing.T, key types.NamespacedName, poke func(i int)) {
	t.Helper()
	deadline := time.Now().Add(wait)
	for i := 0; ; i++ {
		recs := l.next(t, key, poke, i)
		for _, r := range recs {
			if r.quiet() {
				return
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: no reconcile wrote nothing within %s; the last ones: %+v; writes: %v", key, wait, recs,
				l.writes.snapshot("/namespaces/"+key.Namespace+"/"))
		}
	}
}

// pokeLabel returns a poke for converge that sets a label on the MedOpsAPI.
func pokeLabel(t *testing.T, c client.Client, key types.NamespacedName) func(int) {
	return func(i int) {
		t.Helper()
		eventually(t, wait, "label MedOpsAPI "+key.Name, func() error {
			var m v1alpha1.MedOpsAPI
			if err := c.Get(t.Context(), key, &m); err != nil {
				return err
			}
			if m.Labels == nil {
				m.Labels = map[string]string{}
			}
			m.Labels["test.medops.io/poke"] = "p" + strconv.Itoa(i)
			return c.Update(t.Context(), &m)
		})
	}
}

// newNamespace makes a namespace of its own for one test.
func (s *envSuite) newNamespace(t *testing.T, prefix string) string {
	t.Helper()
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: prefix + "-" + rand.String(5)}}
	if err := s.client.Create(t.Context(), ns); err != nil {
		t.Fatalf("create namespace: %v", err)
	}
	return ns.Name
}

// eventually polls check until it returns nil or the timeout passes, then
// fails the test with the last error.
func eventually(t *testing.T, timeout time.Duration, what string, check func() error) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	var err error
	for {
		if err = check(); err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: not reached within %s: %v", what, timeout, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// consistently fails the test if check returns an error at any time
// during the period.
func consistently(t *testing.T, period time.Duration, what string, check func() error) {
	t.Helper()
	deadline := time.Now().Add(period)
	for time.Now().Before(deadline) {
		if err := check(); err != nil {
			t.Fatalf("%s: %v", what, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// bindGeneratedRole creates config/rbac/role.yaml's ClusterRole and binds it
// to user.
func bindGeneratedRole(c client.Client, user string) error {
	raw, err := os.ReadFile(filepath.Join(repo.Root(), "config", "rbac", "role.yaml"))
	if err != nil {
		return fmt.Errorf("read generated role: %w", err)
	}
	var role rbacv1.ClusterRole
	if err := yaml.Unmarshal(raw, &role); err != nil {
		return fmt.Errorf("parse generated role: %w", err)
	}
	ctx := context.Background()
	if err := c.Create(ctx, &role); err != nil {
		return fmt.Errorf("create ClusterRole %s: %w", role.Name, err)
	}
	binding := &rbacv1.ClusterRoleBinding{
		ObjectMeta: metav1.ObjectMeta{Name: "medops-operator-test"},
		RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: role.Name},
		Subjects:   []rbacv1.Subject{{Kind: rbacv1.UserKind, APIGroup: rbacv1.GroupName, Name: user}},
	}
	if err := c.Create(ctx, binding); err != nil {
		return fmt.Errorf("bind ClusterRole %s: %w", role.Name, err)
	}
	return nil
}
