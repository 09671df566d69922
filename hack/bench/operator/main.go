// Command operator is `make bench-operator`: on the envtest control plane
// (the real kube-apiserver and etcd) it creates 10 namespaces, 5,000
// unrelated ConfigMaps and 5,000 unrelated Secrets, and 1,000 MedOpsAPIs;
// then it runs the real medops-operator binary against that apiserver and
// prints how long the operator takes until every MedOpsAPI has all its
// children, how many writes the operator sends in a quiet window after that
// (from the apiserver's audit log, by user, and from apiserver_request_total),
// reconcile p50/p99 from the operator's own histogram and the operator's
// peak RSS. It prints figures and never fails on speed.
package main

import (
	"bufio"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/go-logr/logr"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/dynamic/dynamicinformer"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/metadata"
	"k8s.io/client-go/metadata/metadatainformer"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/clientcmd"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
	crlog "sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/yaml"

	"github.com/medops/medops/hack/bench/common"
	"github.com/medops/medops/internal/repo"
	"github.com/medops/medops/internal/testenv"
)

type options struct {
	medopsAPIs  int
	namespaces  int
	configMaps  int
	secrets     int
	payload     int
	quiet       time.Duration
	timeout     time.Duration
	reconcilers int
	workers     int
	keep        bool
	floor       bool
	smoke       bool
}

func main() {
	var o options
	flag.IntVar(&o.medopsAPIs, "medopsapis", 1000, "MedOpsAPIs to create, spread over the namespaces")
	flag.IntVar(&o.namespaces, "namespaces", 10, "namespaces to create")
	flag.IntVar(&o.configMaps, "configmaps", 5000, "unrelated ConfigMaps to create")
	flag.IntVar(&o.secrets, "secrets", 5000, "unrelated Secrets to create")
	flag.IntVar(&o.payload, "payload", 2048, "bytes of data in each unrelated ConfigMap and Secret")
	flag.DurationVar(&o.quiet, "quiet-window", 120*time.Second, "how long to count the operator's writes after convergence")
	flag.DurationVar(&o.timeout, "timeout", 10*time.Minute, "give up when the operator has not converged within this time")
	flag.IntVar(&o.reconcilers, "max-concurrent-reconciles", 4, "passed to the operator (4 is its default), and the floor client's workers")
	flag.BoolVar(&o.floor, "floor", true, "after the operator, time a plain client writing the same objects (the apiserver's floor)")
	flag.BoolVar(&o.smoke, "smoke", false, "check that the driver still works, not how fast anything is: 20 MedOpsAPIs in 2 namespaces, 20 unrelated ConfigMaps and Secrets, a 5s quiet window")
	flag.IntVar(&o.workers, "create-workers", 16, "concurrent clients creating the objects")
	flag.BoolVar(&o.keep, "keep", false, "keep the temporary folder (operator log, audit log, kubeconfig)")
	flag.Parse()
	if o.smoke {
		o.medopsAPIs, o.namespaces, o.configMaps, o.secrets, o.quiet, o.timeout = 20, 2, 20, 20, 5*time.Second, 3*time.Minute
	}
	if o.reconcilers < 1 {
		o.reconcilers = 1
	}
	if err := run(o); err != nil {
		slog.Error("bench-operator failed", "error", err)
		os.Exit(1)
	}
}

// operatorUser is the name the operator authenticates as, so the audit log
// can tell its writes from everyone else's.
const operatorUser = "medops-operator-bench"

// writeVerbs are the audit verbs that change state.
var writeVerbs = map[string]bool{"create": true, "update": true, "patch": true, "delete": true, "deletecollection": true, "apply": true}

// The audit policy records only the operator's writes, at the Metadata level:
// enough to count them and see which objects they touched, cheap for the
// apiserver.
const auditPolicy = `apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: ["RequestReceived"]
rules:
- level: Metadata
  users: ["` + operatorUser + `"]
  verbs: ["create", "update", "patch", "delete", "deletecollection"]
- level: None
`

func run(o options) error {
	// envtest and client-go log through controller-runtime's logger: keep
	// warnings and errors, drop the chatter.
	crlog.SetLogger(logr.FromSlogHandler(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn})))
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()

	root := repo.Root()
	dir, cleanup, err := common.WorkDir("medops-bench-operator-", o.keep)
	if err != nil {
		return err
	}
	defer cleanup()
	fmt.Print(common.Machine())
	fmt.Printf("setup:   %d MedOpsAPIs in %d namespaces, %d ConfigMaps and %d Secrets of %d bytes each; quiet window %s\n\n",
		o.medopsAPIs, o.namespaces, o.configMaps, o.secrets, o.payload, o.quiet)

	fmt.Fprintln(os.Stderr, "building medops-operator ...")
	opBin, err := common.GoBuild(ctx, root, "./cmd/medops-operator", dir)
	if err != nil {
		return err
	}

	// testenv.Start cannot pass apiserver flags; the benchmark needs two: an
	// audit log (to attribute writes to the operator) and a service IP range
	// large enough for 1,000 Services (envtest's default /24 has 254).
	assets, err := testenv.AssetsDir()
	if err != nil {
		return err
	}
	policyPath := filepath.Join(dir, "audit-policy.yaml")
	auditPath := filepath.Join(dir, "audit.log")
	if err := os.WriteFile(policyPath, []byte(auditPolicy), 0o644); err != nil {
		return fmt.Errorf("writing the audit policy: %w", err)
	}
	env := &envtest.Environment{
		BinaryAssetsDirectory: assets,
		CRDDirectoryPaths:     []string{testenv.CRDDir()},
		ErrorIfCRDPathMissing: true,
		// A loaded 2-core machine can take longer than envtest's default.
		ControlPlaneStopTimeout: time.Minute,
	}
	args := env.ControlPlane.GetAPIServer().Configure()
	args.Set("service-cluster-ip-range", "10.96.0.0/16")
	args.Set("audit-policy-file", policyPath)
	args.Set("audit-log-path", auditPath)
	args.Set("audit-log-mode", "batch")
	fmt.Fprintln(os.Stderr, "starting the envtest control plane ...")
	cfg, err := env.Start()
	if err != nil {
		return fmt.Errorf("starting envtest from %s: %w", assets, err)
	}
	defer func() {
		// Close the benchmark's watches first: the apiserver waits for open
		// watches when it shuts down.
		cancel()
		if err := env.Stop(); err != nil {
			slog.Warn("stopping envtest", "error", err)
		}
	}()
	cfg.QPS, cfg.Burst = 2000, 4000

	// The operator gets its own user (in system:masters: this measures speed,
	// not RBAC) and a kubeconfig with client certificates.
	user, err := env.AddUser(envtest.User{Name: operatorUser, Groups: []string{"system:masters"}}, nil)
	if err != nil {
		return fmt.Errorf("adding the operator's user: %w", err)
	}
	kc, err := user.KubeConfig()
	if err != nil {
		return fmt.Errorf("writing the operator's kubeconfig: %w", err)
	}
	kubeconfig := filepath.Join(dir, "kubeconfig")
	if err := os.WriteFile(kubeconfig, kc, 0o600); err != nil {
		return fmt.Errorf("writing %s: %w", kubeconfig, err)
	}

	kube, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return fmt.Errorf("client: %w", err)
	}
	dyn, err := dynamic.NewForConfig(cfg)
	if err != nil {
		return fmt.Errorf("dynamic client: %w", err)
	}

	spec, err := sample()
	if err != nil {
		return err
	}
	setupStart := time.Now()
	if err := populate(ctx, o, kube, dyn, spec, false); err != nil {
		return err
	}
	opCfg, err := clientcmd.RESTConfigFromKubeConfig(kc)
	if err != nil {
		return fmt.Errorf("reading the operator's kubeconfig: %w", err)
	}
	operatorArgs := func() ([]string, int, error) {
		metricsPort, err := common.FreePort()
		if err != nil {
			return nil, 0, err
		}
		probePort, err := common.FreePort()
		if err != nil {
			return nil, 0, err
		}
		return []string{
			fmt.Sprintf("--metrics-bind-address=127.0.0.1:%d", metricsPort), "--metrics-secure=false",
			fmt.Sprintf("--health-probe-bind-address=127.0.0.1:%d", probePort), "--leader-elect=false",
			fmt.Sprintf("--max-concurrent-reconciles=%d", o.reconcilers),
		}, metricsPort, nil
	}
	// The operator's memory before any MedOpsAPI exists (its caches synced
	// over the unrelated objects' cluster): what remains of its peak,
	// divided by the MedOpsAPIs, is the memory one MedOpsAPI costs.
	baseArgs, _, err := operatorArgs()
	if err != nil {
		return err
	}
	baseline, err := idleMemory(ctx, opBin, dir, kubeconfig, baseArgs)
	if err != nil {
		return err
	}
	if err := populate(ctx, o, kube, dyn, spec, true); err != nil {
		return err
	}
	fmt.Fprintf(os.Stderr, "created everything in %s\n", time.Since(setupStart).Round(time.Millisecond))

	// Watch the children before the operator starts, so no creation is missed.
	tracker := newTracker(o.medopsAPIs)
	mc, err := metadata.NewForConfig(cfg)
	if err != nil {
		return fmt.Errorf("metadata client: %w", err)
	}
	factory := metadatainformer.NewSharedInformerFactory(mc, 0)
	for _, k := range childKinds {
		inf := factory.ForResource(k.gvr).Informer()
		bit := k.bit
		if _, err := inf.AddEventHandler(cache.ResourceEventHandlerFuncs{
			AddFunc:    func(obj any) { tracker.update(obj, bit) },
			UpdateFunc: func(_, obj any) { tracker.update(obj, bit) },
			DeleteFunc: func(obj any) { tracker.remove(obj, bit) },
		}); err != nil {
			return fmt.Errorf("watching %s: %w", k.gvr.Resource, err)
		}
	}
	dfactory := dynamicinformer.NewDynamicSharedInformerFactory(dyn, 0)
	if _, err := dfactory.ForResource(medopsGVR).Informer().AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    tracker.medopsStatus,
		UpdateFunc: func(_, obj any) { tracker.medopsStatus(obj) },
	}); err != nil {
		return fmt.Errorf("watching medopsapis: %w", err)
	}
	factory.Start(ctx.Done())
	dfactory.Start(ctx.Done())
	for gvr, ok := range factory.WaitForCacheSync(ctx.Done()) {
		if !ok {
			return fmt.Errorf("watch of %s did not sync", gvr.Resource)
		}
	}
	for gvr, ok := range dfactory.WaitForCacheSync(ctx.Done()) {
		if !ok {
			return fmt.Errorf("watch of %s did not sync", gvr.Resource)
		}
	}
	if err := tracker.setOwners(ctx, dyn); err != nil {
		return err
	}

	opArgs, metricsPort, err := operatorArgs()
	if err != nil {
		return err
	}
	fmt.Fprintln(os.Stderr, "starting medops-operator", strings.Join(opArgs, " "))
	opStart := time.Now()
	op, err := common.Start("medops-operator", filepath.Join(dir, "operator.log"), []string{"KUBECONFIG=" + kubeconfig}, opBin, opArgs...)
	if err != nil {
		return err
	}
	defer op.Stop(10 * time.Second)

	convergedAt, err := tracker.wait(ctx, op, o.timeout)
	if err != nil {
		return fmt.Errorf("%w\noperator log:\n%s", err, op.Tail(20))
	}
	converge := convergedAt.Sub(opStart)
	// The quiet window starts now, for both counts: the audit log from this
	// instant and the apiserver's counter from this scrape.
	windowStart := time.Now()
	apiBefore, err := apiserverWrites(ctx, kube)
	if err != nil {
		return err
	}
	fmt.Fprintf(os.Stderr, "converged after %s; counting writes for %s ...\n", converge.Round(time.Millisecond), o.quiet)
	metricsURL := fmt.Sprintf("http://127.0.0.1:%d/metrics", metricsPort)
	atConverge, err := scrape(ctx, metricsURL)
	if err != nil {
		return err
	}
	memAtConverge, _ := common.ReadMem(op.Cmd.Process.Pid)

	select {
	case <-time.After(o.quiet):
	case <-op.Done():
		return fmt.Errorf("the operator exited during the quiet window\n%s", op.Tail(20))
	}
	apiAfter, err := apiserverWrites(ctx, kube)
	if err != nil {
		return err
	}
	atEnd, err := scrape(ctx, metricsURL)
	if err != nil {
		return err
	}
	mem, err := common.ReadMem(op.Cmd.Process.Pid)
	if err != nil {
		return err
	}
	op.Stop(10 * time.Second)
	// The audit log is written in batches: give the last one time to land.
	time.Sleep(2 * time.Second)
	audit, err := auditWrites(auditPath, windowStart)
	if err != nil {
		return err
	}
	var fl *floorResult
	if o.floor {
		r, err := floor(ctx, o, opCfg, kube, dyn, spec, o.reconcilers)
		if err != nil {
			return err
		}
		fl = &r
	}

	report(os.Stdout, reportData{
		o: o, converge: converge, firstAll: tracker.firstComplete.Sub(opStart), children: tracker.childrenAt.Sub(opStart),
		atConverge: atConverge, atEnd: atEnd, apiBefore: apiBefore, apiAfter: apiAfter,
		audit: audit, mem: mem, memAtConverge: memAtConverge, baseline: baseline, floor: fl,
	})
	return nil
}

// The sample the benchmark multiplies: like config/samples' Raspberry Pi
// MedOpsAPI (arm64, small cache, Ingress, generated write token), with an
// emptyDir for the task store so that no claim is needed, and the gateway
// on. The name and host are filled in per object.
const sampleSpec = `
replicas: 1
architectures: [arm64]
resources:
  requests: {cpu: 25m, memory: 48Mi}
  limits: {memory: 128Mi}
modules:
  tasks: {enabled: true}
  gateway:
    enabled: true
    upstreams:
    - name: ensembl
      url: https://rest.ensembl.org
      ttl: 1h
      timeout: 15s
cache:
  size: 16Mi
  shards: 8
  maxEntrySize: 512Ki
  ttl: 10m
storage:
  ephemeral: true
ingress:
  enabled: true
  className: traefik
`

var medopsGVR = schema.GroupVersionResource{Group: "medops.io", Version: "v1alpha1", Resource: "medopsapis"}

// sample parses sampleSpec.
func sample() (map[string]any, error) {
	var spec map[string]any
	if err := yaml.Unmarshal([]byte(sampleSpec), &spec); err != nil {
		return nil, fmt.Errorf("parsing the sample spec: %w", err)
	}
	return spec, nil
}

// job is one write of the set-up.
type job func(ctx context.Context) error

// createMedOpsAPI is the job that creates one sample MedOpsAPI.
func createMedOpsAPI(dyn dynamic.Interface, spec map[string]any, ns, name string) job {
	return func(ctx context.Context) error {
		s := deepCopy(spec)
		s["ingress"].(map[string]any)["host"] = name + "." + ns + ".medops.example.org"
		u := &unstructured.Unstructured{Object: map[string]any{
			"apiVersion": "medops.io/v1alpha1", "kind": "MedOpsAPI",
			"metadata": map[string]any{"name": name, "namespace": ns},
			"spec":     s,
		}}
		_, err := dyn.Resource(medopsGVR).Namespace(ns).Create(ctx, u, metav1.CreateOptions{})
		return err
	}
}

// runJobs runs jobs from workers concurrent clients and returns the first
// error.
func runJobs(ctx context.Context, workers int, jobs []job) error {
	ch := make(chan job)
	var first error
	var once sync.Once
	var wg sync.WaitGroup
	cctx, cancel := context.WithCancel(ctx)
	defer cancel()
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := range ch {
				if err := j(cctx); err != nil {
					once.Do(func() { first = err; cancel() })
				}
			}
		}()
	}
	for _, j := range jobs {
		select {
		case ch <- j:
		case <-cctx.Done():
		}
	}
	close(ch)
	wg.Wait()
	return first
}

// populate creates the namespaces and the unrelated objects, and the
// MedOpsAPIs unless medopsAPIs is false.
func populate(ctx context.Context, o options, kube kubernetes.Interface, dyn dynamic.Interface, spec map[string]any, medopsAPIs bool) error {
	nss := make([]string, o.namespaces)
	for i := range nss {
		nss[i] = fmt.Sprintf("bench-%02d", i)
		if medopsAPIs {
			continue // made with the unrelated objects
		}
		ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: nss[i]}}
		if _, err := kube.CoreV1().Namespaces().Create(ctx, ns, metav1.CreateOptions{}); err != nil {
			return fmt.Errorf("creating namespace %s: %w", nss[i], err)
		}
	}
	var jobs []job
	if medopsAPIs {
		for i := 0; i < o.medopsAPIs; i++ {
			jobs = append(jobs, createMedOpsAPI(dyn, spec, nss[i%len(nss)], fmt.Sprintf("api-%04d", i)))
		}
	} else {
		payload := strings.Repeat("x", o.payload)
		for i := 0; i < o.configMaps; i++ {
			ns, name := nss[i%len(nss)], fmt.Sprintf("unrelated-%05d", i)
			jobs = append(jobs, func(ctx context.Context) error {
				cm := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: map[string]string{"app": "unrelated"}}, Data: map[string]string{"payload": payload}}
				_, err := kube.CoreV1().ConfigMaps(ns).Create(ctx, cm, metav1.CreateOptions{})
				return err
			})
		}
		for i := 0; i < o.secrets; i++ {
			ns, name := nss[i%len(nss)], fmt.Sprintf("unrelated-%05d", i)
			jobs = append(jobs, func(ctx context.Context) error {
				s := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: map[string]string{"app": "unrelated"}}, StringData: map[string]string{"payload": payload}}
				_, err := kube.CoreV1().Secrets(ns).Create(ctx, s, metav1.CreateOptions{})
				return err
			})
		}
	}
	fmt.Fprintf(os.Stderr, "creating %d objects ...\n", len(jobs))
	if err := runJobs(ctx, o.workers, jobs); err != nil {
		return fmt.Errorf("creating the benchmark objects: %w", err)
	}
	return nil
}

func deepCopy(m map[string]any) map[string]any {
	b, _ := json.Marshal(m)
	var out map[string]any
	_ = json.Unmarshal(b, &out)
	return out
}

// childKind is one kind of object a MedOpsAPI must own once reconciled.
type childKind struct {
	name string
	gvr  schema.GroupVersionResource
	bit  uint8
}

var childKinds = []childKind{
	{"Deployment", schema.GroupVersionResource{Group: "apps", Version: "v1", Resource: "deployments"}, 1 << 0},
	{"Service", schema.GroupVersionResource{Version: "v1", Resource: "services"}, 1 << 1},
	{"ConfigMap", schema.GroupVersionResource{Version: "v1", Resource: "configmaps"}, 1 << 2},
	{"ServiceAccount", schema.GroupVersionResource{Version: "v1", Resource: "serviceaccounts"}, 1 << 3},
	{"Ingress", schema.GroupVersionResource{Group: "networking.k8s.io", Version: "v1", Resource: "ingresses"}, 1 << 4},
	{"Secret (token)", schema.GroupVersionResource{Version: "v1", Resource: "secrets"}, 1 << 5},
}

// statusBit is set while a MedOpsAPI's status.observedGeneration equals its
// metadata.generation: the operator has finished with the current spec and
// said so. A MedOpsAPI is converged with all its children and this bit.
const (
	childrenBits = 1<<6 - 1
	statusBit    = 1 << 6
	allChildren  = childrenBits | statusBit
)

// tracker records, per MedOpsAPI, which kinds of children it owns.
type tracker struct {
	mu            sync.Mutex
	want          int
	owners        map[string]uint8 // MedOpsAPI UID → kinds seen
	complete      int
	firstComplete time.Time
	childrenDone  int
	childrenAt    time.Time // when the last MedOpsAPI got its last child
	done          chan struct{}
	ownersLoaded  bool
	closed        bool
	doneAt        time.Time
}

func newTracker(want int) *tracker {
	return &tracker{want: want, owners: map[string]uint8{}, done: make(chan struct{})}
}

// setOwners loads the MedOpsAPIs' UIDs; children owned by anything else do
// not count.
func (t *tracker) setOwners(ctx context.Context, dyn dynamic.Interface) error {
	list, err := dyn.Resource(medopsGVR).List(ctx, metav1.ListOptions{})
	if err != nil {
		return fmt.Errorf("listing MedOpsAPIs: %w", err)
	}
	if len(list.Items) != t.want {
		return fmt.Errorf("found %d MedOpsAPIs, created %d", len(list.Items), t.want)
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	seen := t.owners
	t.owners = make(map[string]uint8, len(list.Items))
	for _, u := range list.Items {
		t.owners[string(u.GetUID())] = seen[string(u.GetUID())]
	}
	t.ownersLoaded = true
	return nil
}

func medopsOwner(obj any) (string, bool) {
	if d, ok := obj.(cache.DeletedFinalStateUnknown); ok {
		obj = d.Obj
	}
	m, ok := obj.(*metav1.PartialObjectMetadata)
	if !ok {
		return "", false
	}
	for _, ref := range m.OwnerReferences {
		if ref.Kind == "MedOpsAPI" && strings.HasPrefix(ref.APIVersion, "medops.io/") {
			return string(ref.UID), true
		}
	}
	return "", false
}

func (t *tracker) update(obj any, bit uint8) {
	uid, ok := medopsOwner(obj)
	if !ok {
		return
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	t.set(uid, bit)
}

// set records a bit for a MedOpsAPI; the caller holds t.mu.
func (t *tracker) set(uid string, bit uint8) {
	before := t.owners[uid]
	after := before | bit
	t.owners[uid] = after
	if before&childrenBits != childrenBits && after&childrenBits == childrenBits {
		t.childrenDone++
		if t.childrenDone == t.want {
			t.childrenAt = time.Now()
		}
	}
	if before != allChildren && after == allChildren {
		t.complete++
		if t.firstComplete.IsZero() {
			t.firstComplete = time.Now()
		}
		if t.complete == t.want && !t.closed {
			t.closed = true
			t.doneAt = time.Now()
			close(t.done)
		}
	}
}

func (t *tracker) remove(obj any, bit uint8) {
	uid, ok := medopsOwner(obj)
	if !ok {
		return
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	t.clear(uid, bit)
}

// clear removes a bit for a MedOpsAPI; the caller holds t.mu.
func (t *tracker) clear(uid string, bit uint8) {
	if t.owners[uid] == allChildren {
		t.complete--
	}
	if t.owners[uid]&childrenBits == childrenBits && bit&childrenBits != 0 {
		t.childrenDone--
	}
	t.owners[uid] &^= bit
}

// medopsStatus records whether a MedOpsAPI's status is current.
func (t *tracker) medopsStatus(obj any) {
	u, ok := obj.(*unstructured.Unstructured)
	if !ok {
		return
	}
	og, _, _ := unstructured.NestedInt64(u.Object, "status", "observedGeneration")
	t.mu.Lock()
	defer t.mu.Unlock()
	if _, known := t.owners[string(u.GetUID())]; !known && len(t.owners) > 0 && t.ownersLoaded {
		return
	}
	if og == u.GetGeneration() {
		t.set(string(u.GetUID()), statusBit)
	} else {
		t.clear(string(u.GetUID()), statusBit)
	}
}

func (t *tracker) status() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	missing := map[string]int{}
	for _, seen := range t.owners {
		for _, k := range childKinds {
			if seen&k.bit == 0 {
				missing[k.name]++
			}
		}
		if seen&statusBit == 0 {
			missing["status.observedGeneration"]++
		}
	}
	return fmt.Sprintf("%d/%d complete; missing children by kind: %v", t.complete, t.want, missing)
}

func (t *tracker) wait(ctx context.Context, op *common.Proc, timeout time.Duration) (time.Time, error) {
	tick := time.NewTicker(10 * time.Second)
	defer tick.Stop()
	deadline := time.After(timeout)
	for {
		select {
		case <-t.done:
			t.mu.Lock()
			defer t.mu.Unlock()
			return t.doneAt, nil
		case <-op.Done():
			return time.Time{}, fmt.Errorf("the operator exited before converging: %s", t.status())
		case <-tick.C:
			fmt.Fprintln(os.Stderr, "  ", t.status())
		case <-deadline:
			return time.Time{}, fmt.Errorf("not converged within %s: %s", timeout, t.status())
		case <-ctx.Done():
			return time.Time{}, ctx.Err()
		}
	}
}

// metrics is a scrape of Prometheus text: sample name with labels → value.
type metrics map[string]float64

func scrape(ctx context.Context, url string) (metrics, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, fmt.Errorf("scraping the operator's metrics: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("scraping the operator's metrics: %s", resp.Status)
	}
	return parseMetrics(resp.Body)
}

func parseMetrics(r io.Reader) (metrics, error) {
	m := metrics{}
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || line[0] == '#' {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		if i < 0 {
			continue
		}
		v, err := strconv.ParseFloat(line[i+1:], 64)
		if err != nil {
			continue
		}
		m[line[:i]] += v
	}
	return m, sc.Err()
}

// label returns the value of one label in a sample's name, "" if absent.
func label(sample, name string) string {
	_, rest, ok := strings.Cut(sample, name+`="`)
	if !ok {
		return ""
	}
	v, _, _ := strings.Cut(rest, `"`)
	return v
}

// quantile estimates a quantile from a cumulative histogram the way
// Prometheus's histogram_quantile does: linear within the bucket. Buckets of
// every controller are summed.
func (m metrics) quantile(family string, q float64) float64 {
	type bucket struct{ le, n float64 }
	byLE := map[float64]float64{}
	for k, v := range m {
		if !strings.HasPrefix(k, family+"_bucket{") {
			continue
		}
		leS := label(k, "le")
		le, err := strconv.ParseFloat(leS, 64)
		if leS == "+Inf" {
			le, err = math.Inf(1), nil
		}
		if err != nil {
			continue
		}
		byLE[le] += v
	}
	var bs []bucket
	for le, n := range byLE {
		bs = append(bs, bucket{le, n})
	}
	sort.Slice(bs, func(i, j int) bool { return bs[i].le < bs[j].le })
	if len(bs) == 0 || bs[len(bs)-1].n == 0 {
		return math.NaN()
	}
	rank := q * bs[len(bs)-1].n
	prevLE, prevN := 0.0, 0.0
	for _, b := range bs {
		if b.n >= rank {
			if math.IsInf(b.le, 1) {
				return prevLE
			}
			if b.n == prevN {
				return b.le
			}
			return prevLE + (b.le-prevLE)*(rank-prevN)/(b.n-prevN)
		}
		prevLE, prevN = b.le, b.n
	}
	return bs[len(bs)-1].le
}

func (m metrics) sum(prefix string, match func(sample string) bool) float64 {
	var s float64
	for k, v := range m {
		if strings.HasPrefix(k, prefix) && (match == nil || match(k)) {
			s += v
		}
	}
	return s
}

// apiserverWrites scrapes the apiserver's request counter and returns write
// requests by "VERB resource", leaving out leases (the apiserver renews its
// own identity lease every few seconds; the operator runs without leader
// election, so it holds none).
func apiserverWrites(ctx context.Context, kube kubernetes.Interface) (map[string]float64, error) {
	b, err := kube.CoreV1().RESTClient().Get().AbsPath("/metrics").DoRaw(ctx)
	if err != nil {
		return nil, fmt.Errorf("scraping the apiserver's metrics: %w", err)
	}
	m, err := parseMetrics(strings.NewReader(string(b)))
	if err != nil {
		return nil, err
	}
	out := map[string]float64{}
	for k, v := range m {
		if !strings.HasPrefix(k, "apiserver_request_total{") {
			continue
		}
		verb := strings.ToLower(label(k, "verb"))
		res := label(k, "resource")
		if sub := label(k, "subresource"); sub != "" {
			res += "/" + sub
		}
		if !writeVerbs[verb] || res == "leases" {
			continue
		}
		out[verb+" "+res] += v
	}
	return out, nil
}

// auditEvent is the part of an audit.k8s.io/v1 Event the benchmark reads.
type auditEvent struct {
	Stage string `json:"stage"`
	Verb  string `json:"verb"`
	User  struct {
		Username string `json:"username"`
	} `json:"user"`
	ObjectRef struct {
		Resource    string `json:"resource"`
		Subresource string `json:"subresource"`
		Namespace   string `json:"namespace"`
		Name        string `json:"name"`
	} `json:"objectRef"`
	ResponseStatus struct {
		Code int `json:"code"`
	} `json:"responseStatus"`
	RequestReceivedTimestamp metav1.MicroTime `json:"requestReceivedTimestamp"`
}

type auditCount struct {
	total   int
	byKey   map[string]int // "verb resource" → count
	samples []string       // a few objects written, to point at a hot loop
}

// auditWrites counts the operator's writes received at or after since.
func auditWrites(path string, since time.Time) (auditCount, error) {
	c := auditCount{byKey: map[string]int{}}
	f, err := os.Open(path)
	if err != nil {
		return c, fmt.Errorf("reading the audit log: %w", err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 4<<20)
	for sc.Scan() {
		var e auditEvent
		if err := json.Unmarshal(sc.Bytes(), &e); err != nil {
			return c, fmt.Errorf("parsing the audit log: %w", err)
		}
		if e.Stage != "ResponseComplete" || e.User.Username != operatorUser || !writeVerbs[e.Verb] {
			continue
		}
		if e.RequestReceivedTimestamp.Time.Before(since) {
			continue
		}
		res := e.ObjectRef.Resource
		if e.ObjectRef.Subresource != "" {
			res += "/" + e.ObjectRef.Subresource
		}
		c.total++
		c.byKey[e.Verb+" "+res]++
		if len(c.samples) < 5 {
			c.samples = append(c.samples, fmt.Sprintf("+%.2fs %s %s %s/%s → %d", e.RequestReceivedTimestamp.Sub(since).Seconds(),
				e.Verb, res, e.ObjectRef.Namespace, e.ObjectRef.Name, e.ResponseStatus.Code))
		}
	}
	return c, sc.Err()
}

type reportData struct {
	o                   options
	converge, firstAll  time.Duration
	children            time.Duration
	atConverge, atEnd   metrics
	apiBefore, apiAfter map[string]float64
	audit               auditCount
	mem, memAtConverge  common.Mem
	baseline            common.Mem   // the operator's memory with no MedOpsAPI
	floor               *floorResult // nil when skipped
}

// floorRow compares convergence with the floor: a plain client writing the
// same objects (see floor).
func floorRow(d reportData) []string {
	if d.floor == nil {
		return []string{"convergence ÷ apiserver floor", "not measured (-floor=false)", "≤ 1.5×", ""}
	}
	ratio := d.converge.Seconds() / d.floor.took.Seconds()
	return []string{
		fmt.Sprintf("convergence ÷ apiserver floor (a plain client's %d writes took %s, %d workers)", d.floor.writes, d.floor.took.Round(10*time.Millisecond), d.o.reconcilers),
		fmt.Sprintf("%.2f×", ratio), "≤ 1.5×", metOr(ratio <= 1.5),
	}
}

func perObject(d reportData) string {
	peak := max(d.mem.HWM, d.memAtConverge.HWM)
	return fmt.Sprintf("%.1f KiB", float64(peak-d.baseline.RSS)/1024/float64(d.o.medopsAPIs))
}

func metOr(ok bool) string {
	if ok {
		return "met"
	}
	return "MISSED"
}

func report(w io.Writer, d reportData) {
	const family = "controller_runtime_reconcile_time_seconds"
	met := metOr
	apiDelta := map[string]float64{}
	var apiTotal float64
	for k, v := range d.apiAfter {
		if delta := v - d.apiBefore[k]; delta > 0 {
			apiDelta[k] = delta
			apiTotal += delta
		}
	}
	reconciles := func(m metrics) string {
		return fmt.Sprintf("%.0f (errors %.0f, requeues %.0f)",
			m.sum("controller_runtime_reconcile_total{", nil),
			m.sum("controller_runtime_reconcile_total{", func(s string) bool { return label(s, "result") == "error" }),
			m.sum("controller_runtime_reconcile_total{", func(s string) bool { return strings.HasPrefix(label(s, "result"), "requeue") }))
	}
	secs := func(v float64) string {
		if math.IsNaN(v) {
			return "n/a"
		}
		return fmt.Sprintf("%.1f ms", v*1000)
	}
	rows := [][]string{
		{"time until every MedOpsAPI has all its children and a current status", d.converge.Round(10 * time.Millisecond).String(), "< 60 s", met(d.converge < 60*time.Second)},
		floorRow(d),
		{"  (all children alone after / first MedOpsAPI converged after)", d.children.Round(10*time.Millisecond).String() + " / " + d.firstAll.Round(10*time.Millisecond).String(), "", ""},
		{fmt.Sprintf("operator writes in the %s after (audit log)", d.o.quiet), fmt.Sprint(d.audit.total), "0", met(d.audit.total == 0)},
		{fmt.Sprintf("all writes in the %s after, leases excluded (apiserver_request_total)", d.o.quiet), fmt.Sprintf("%.0f", apiTotal), "0", met(apiTotal == 0)},
		{"reconcile p50 / p99 until converged", secs(d.atConverge.quantile(family, 0.5)) + " / " + secs(d.atConverge.quantile(family, 0.99)), "", ""},
		{"reconcile p50 / p99 at the end", secs(d.atEnd.quantile(family, 0.5)) + " / " + secs(d.atEnd.quantile(family, 0.99)), "", ""},
		{"reconciles until converged", reconciles(d.atConverge), "", ""},
		{"reconciles at the end", reconciles(d.atEnd), "", ""},
		{"operator peak RSS (VmHWM)", common.MiB(max(d.mem.HWM, d.memAtConverge.HWM)), "< 150 MiB", met(max(d.mem.HWM, d.memAtConverge.HWM) < 150<<20)},
		{"  (peak RSS when converged / RSS at the end)", common.MiB(d.memAtConverge.HWM) + " / " + common.MiB(d.mem.RSS), "", ""},
		{"operator RSS with no MedOpsAPI (caches synced)", common.MiB(d.baseline.RSS), "", ""},
		{"operator memory per MedOpsAPI ((peak − that) ÷ MedOpsAPIs)", perObject(d), "", ""},
	}
	common.Table(w, []string{"figure", "value", "target", ""}, rows)
	if d.audit.total > 0 {
		fmt.Fprintf(w, "\noperator writes after convergence by verb and resource: %v\nfirst few (time after the window opened, verb, object → status): %s\n", d.audit.byKey, strings.Join(d.audit.samples, "; "))
	}
	if apiTotal > 0 {
		fmt.Fprintf(w, "apiserver writes after convergence by verb and resource: %v\n", apiDelta)
	}
	fmt.Fprintf(w, "load average at the end: %.2f\n", common.LoadAvg1())
}

// idleMemory runs the operator until it is ready, lets it settle and returns
// its memory.
func idleMemory(ctx context.Context, bin, dir, kubeconfig string, args []string) (common.Mem, error) {
	var probe string
	for _, a := range args {
		if v, ok := strings.CutPrefix(a, "--health-probe-bind-address="); ok {
			probe = "http://" + v + "/readyz"
		}
	}
	op, err := common.Start("medops-operator (idle)", filepath.Join(dir, "operator-idle.log"), []string{"KUBECONFIG=" + kubeconfig}, bin, args...)
	if err != nil {
		return common.Mem{}, err
	}
	defer op.Stop(10 * time.Second)
	deadline := time.Now().Add(time.Minute)
	for {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, probe, nil)
		if resp, err := http.DefaultClient.Do(req); err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				break
			}
		}
		if done, _ := op.Exited(); done || time.Now().After(deadline) {
			return common.Mem{}, fmt.Errorf("the operator did not become ready on an empty cluster\n%s", op.Tail(20))
		}
		time.Sleep(100 * time.Millisecond)
	}
	time.Sleep(3 * time.Second) // caches synced and first GCs done
	return common.ReadMem(op.Cmd.Process.Pid)
}
