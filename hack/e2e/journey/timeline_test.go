//go:build e2e

package journey

import (
	"context"
	"fmt"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/medops/medops/operator/resource"
)

// timeline notes, as this process sees them, the steps of one MedOpsAPI's
// rollout: each pod's deletion, exit, removal, creation, scheduling,
// sandbox, start, startup probe and readiness, and each change of its
// Service's ready endpoints. Issue 20 item 19a asks where a Recreate
// rollout's gap goes; the failure counts alone do not say.
type timeline struct {
	t0     time.Time
	mu     sync.Mutex
	events []timelineEvent
	seen   map[string]bool
}

type timelineEvent struct {
	at   time.Time
	what string
}

// note records what once, at the time it was first seen.
func (tl *timeline) note(at time.Time, what string) {
	tl.mu.Lock()
	defer tl.mu.Unlock()
	if tl.seen[what] {
		return
	}
	tl.seen[what] = true
	tl.events = append(tl.events, timelineEvent{at, what})
}

// watchRollout starts watching name's pods and EndpointSlices; the
// returned function stops the watches. Pods that exist when it starts are
// "old".
func (s *suite) watchRollout(t *testing.T, name string) (*timeline, func()) {
	t.Helper()
	cfg, err := clientcmd.BuildConfigFromFlags("", s.c.Kubeconfig)
	if err != nil {
		t.Fatal(err)
	}
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(s.ctx)
	tl := &timeline{t0: time.Now(), seen: map[string]bool{}}
	pods, err := cs.CoreV1().Pods(ns).Watch(ctx, metav1.ListOptions{LabelSelector: resource.LabelInstance + "=" + name})
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	slices, err := cs.DiscoveryV1().EndpointSlices(ns).Watch(ctx, metav1.ListOptions{LabelSelector: discoveryv1.LabelServiceName + "=" + name})
	if err != nil {
		cancel()
		pods.Stop()
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	wg.Add(2)
	go func() {
		defer wg.Done()
		tl.pods(pods.ResultChan())
	}()
	go func() {
		defer wg.Done()
		tl.endpoints(slices.ResultChan())
	}()
	var once sync.Once
	return tl, func() {
		once.Do(func() {
			pods.Stop()
			slices.Stop()
			cancel()
			wg.Wait()
		})
	}
}

func (tl *timeline) pods(ch <-chan watch.Event) {
	for ev := range ch {
		now := time.Now()
		p, ok := ev.Object.(*corev1.Pod)
		if !ok {
			continue
		}
		short := p.Name[strings.LastIndex(p.Name, "-")+1:]
		pod := "pod " + short
		switch {
		case ev.Type == watch.Deleted:
			tl.note(now, pod+": gone from the API")
			continue
		case ev.Type == watch.Added && p.CreationTimestamp.Before(&metav1.Time{Time: tl.t0.Add(-time.Second)}):
			// Creation times have whole seconds: a pod made in the second
			// before the watch began counts as new, which none is.
			tl.note(now, pod+": there before the rollout")
		case ev.Type == watch.Added:
			tl.note(now, pod+": created")
		}
		if p.DeletionTimestamp != nil {
			tl.note(now, pod+": deletion requested")
		}
		if p.Spec.NodeName != "" {
			tl.note(now, pod+": scheduled")
		}
		for _, c := range p.Status.Conditions {
			if c.Status != corev1.ConditionTrue {
				if c.Type == corev1.PodReady && tl.seen[pod+": Ready"] {
					tl.note(now, pod+": not Ready")
				}
				continue
			}
			switch c.Type {
			case corev1.PodReadyToStartContainers:
				tl.note(now, pod+": sandbox ready")
			case corev1.PodReady:
				tl.note(now, pod+": Ready")
			}
		}
		for _, c := range p.Status.ContainerStatuses {
			if c.State.Running != nil {
				tl.note(now, pod+": container running")
			}
			if c.Started != nil && *c.Started {
				tl.note(now, pod+": startup probe passed")
			}
			if c.State.Terminated != nil {
				tl.note(now, fmt.Sprintf("%s: container exited (%s, code %d)", pod, c.State.Terminated.Reason, c.State.Terminated.ExitCode))
			}
		}
		if p.Status.Phase == corev1.PodSucceeded || p.Status.Phase == corev1.PodFailed {
			tl.note(now, pod+": phase "+string(p.Status.Phase))
		}
	}
}

func (tl *timeline) endpoints(ch <-chan watch.Event) {
	last := ""
	for ev := range ch {
		now := time.Now()
		es, ok := ev.Object.(*discoveryv1.EndpointSlice)
		if !ok || ev.Type == watch.Deleted {
			continue
		}
		var ready, terminating int
		for _, e := range es.Endpoints {
			switch {
			case e.Conditions.Ready != nil && *e.Conditions.Ready:
				ready++
			case e.Conditions.Terminating != nil && *e.Conditions.Terminating:
				terminating++
			}
		}
		state := fmt.Sprintf("endpoints: %d ready, %d terminating, %d other", ready, terminating, len(es.Endpoints)-ready-terminating)
		if state != last {
			last = state
			tl.mu.Lock()
			tl.events = append(tl.events, timelineEvent{now, state})
			tl.mu.Unlock()
		}
	}
}

// report lists the steps in the order seen, as seconds since the rollout
// began, with the clients' first and last failure among them.
func (tl *timeline) report(start time.Time, r rolloutResult) string {
	tl.mu.Lock()
	evs := append([]timelineEvent(nil), tl.events...)
	tl.mu.Unlock()
	evs = append(evs, timelineEvent{start, "rollout begins"})
	if !r.firstFail.IsZero() {
		evs = append(evs, timelineEvent{r.firstFail, "clients: first failure"}, timelineEvent{r.lastFail, "clients: last failure"})
	}
	sort.SliceStable(evs, func(i, j int) bool { return evs[i].at.Before(evs[j].at) })
	var b strings.Builder
	for _, e := range evs {
		fmt.Fprintf(&b, "\n  %+6.2f s  %s", e.at.Sub(start).Seconds(), e.what)
	}
	return b.String()
}
