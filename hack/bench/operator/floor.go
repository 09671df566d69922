package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os"
	"sync"
	"sync/atomic"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/medops/medops/api/v1alpha1"
	"github.com/medops/medops/operator"
	"github.com/medops/medops/operator/apply"
	"github.com/medops/medops/operator/resource"
)

// floorResult is how fast a plain client writes what the operator writes.
type floorResult struct {
	took   time.Duration
	writes int64
}

// floorWork is one MedOpsAPI's writes, built before the clock starts.
type floorWork struct {
	api    *v1alpha1.MedOpsAPI
	token  *corev1.Secret
	apply  []*unstructured.Unstructured
	status *v1alpha1.MedOpsAPI
}

// floor measures the apiserver's own limit for what convergence asks of it.
// In namespaces of its own (floor-NN) it creates the same MedOpsAPIs as the
// operator's run, untimed, and renders their children with the operator's
// own builders; then, timed, a plain client writes exactly what the
// operator writes to converge, from as many workers as the operator has
// reconcilers: the token Secret (create), every child (server-side apply,
// forced, in the operator's order) and the status (update). No cache, no
// reads, no diffing: the floor is the writes alone, as the operator's user
// with the operator's client settings (no client-side rate limit).
func floor(ctx context.Context, o options, opCfg *rest.Config, kube kubernetes.Interface, dyn dynamic.Interface, spec map[string]any, workers int) (floorResult, error) {
	nss := make([]string, o.namespaces)
	for i := range nss {
		nss[i] = fmt.Sprintf("floor-%02d", i)
		ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: nss[i]}}
		if _, err := kube.CoreV1().Namespaces().Create(ctx, ns, metav1.CreateOptions{}); err != nil {
			return floorResult{}, fmt.Errorf("creating namespace %s: %w", nss[i], err)
		}
	}
	var jobs []job
	for i := 0; i < o.medopsAPIs; i++ {
		jobs = append(jobs, createMedOpsAPI(dyn, spec, nss[i%len(nss)], fmt.Sprintf("api-%04d", i)))
	}
	fmt.Fprintf(os.Stderr, "floor: creating %d MedOpsAPIs in floor-* namespaces ...\n", len(jobs))
	if err := runJobs(ctx, o.workers, jobs); err != nil {
		return floorResult{}, fmt.Errorf("creating the floor's MedOpsAPIs: %w", err)
	}

	scheme, err := operator.NewScheme()
	if err != nil {
		return floorResult{}, err
	}
	cfg := rest.CopyConfig(opCfg)
	cfg.QPS = -1 // as controller-runtime's GetConfig leaves the operator's client
	c, err := client.New(cfg, client.Options{Scheme: scheme})
	if err != nil {
		return floorResult{}, fmt.Errorf("floor client: %w", err)
	}
	var work []floorWork
	for _, ns := range nss {
		var list v1alpha1.MedOpsAPIList
		if err := c.List(ctx, &list, client.InNamespace(ns)); err != nil {
			return floorResult{}, fmt.Errorf("listing the floor's MedOpsAPIs: %w", err)
		}
		for i := range list.Items {
			w, err := floorWorkFor(&list.Items[i], scheme)
			if err != nil {
				return floorResult{}, err
			}
			work = append(work, w)
		}
	}
	if len(work) != o.medopsAPIs {
		return floorResult{}, fmt.Errorf("floor: found %d MedOpsAPIs, created %d", len(work), o.medopsAPIs)
	}

	fmt.Fprintf(os.Stderr, "floor: writing the children of %d MedOpsAPIs from %d workers ...\n", len(work), workers)
	var writes atomic.Int64
	next := make(chan floorWork)
	errc := make(chan error, workers)
	var wg sync.WaitGroup
	start := time.Now()
	for range workers {
		wg.Go(func() {
			for w := range next {
				if err := w.write(ctx, c, &writes); err != nil {
					errc <- err
					return
				}
			}
		})
	}
	var first error
feed:
	for _, w := range work {
		select {
		case next <- w:
		case first = <-errc:
			break feed
		}
	}
	close(next)
	wg.Wait()
	took := time.Since(start)
	if first == nil {
		select {
		case first = <-errc:
		default:
		}
	}
	if first != nil {
		return floorResult{}, fmt.Errorf("floor: %w", first)
	}
	return floorResult{took: took, writes: writes.Load()}, nil
}

// floorWorkFor renders one MedOpsAPI's writes with the operator's builders.
func floorWorkFor(m *v1alpha1.MedOpsAPI, scheme *runtime.Scheme) (floorWork, error) {
	buf := make([]byte, 32)
	if _, err := rand.Read(buf); err != nil {
		return floorWork{}, err
	}
	w := floorWork{api: m, token: resource.BuildTokenSecret(m, []byte(hex.EncodeToString(buf)))}
	d, err := resource.Prepare(m, resource.Inputs{TokenSecretName: w.token.Name})
	if err != nil {
		return floorWork{}, fmt.Errorf("rendering %s/%s: %w", m.Namespace, m.Name, err)
	}
	var kinds []resource.Kind
	for _, k := range resource.Kinds() {
		if !k.Optional { // envtest serves no optional CRD kinds
			kinds = append(kinds, k)
		}
	}
	for _, ch := range d.Children(kinds) {
		if !ch.Wanted {
			continue // the operator's delete of an absent child costs a cache read only
		}
		doc, _, err := apply.Document(ch.Object, scheme)
		if err != nil {
			return floorWork{}, err
		}
		w.apply = append(w.apply, doc)
	}
	w.status = m.DeepCopy()
	w.status.Status.ObservedGeneration = m.Generation
	return w, nil
}

func (w floorWork) write(ctx context.Context, c client.Client, writes *atomic.Int64) error {
	if err := c.Create(ctx, w.token, client.FieldOwner(operator.FieldManager)); err != nil {
		return fmt.Errorf("creating Secret %s/%s: %w", w.token.Namespace, w.token.Name, err)
	}
	writes.Add(1)
	for _, doc := range w.apply {
		if err := c.Apply(ctx, client.ApplyConfigurationFromUnstructured(doc.DeepCopy()),
			client.FieldOwner(operator.FieldManager), client.ForceOwnership); err != nil {
			return fmt.Errorf("applying %s %s/%s: %w", doc.GetKind(), doc.GetNamespace(), doc.GetName(), err)
		}
		writes.Add(1)
	}
	if err := c.Status().Update(ctx, w.status); err != nil {
		return fmt.Errorf("updating the status of %s/%s: %w", w.api.Namespace, w.api.Name, err)
	}
	writes.Add(1)
	return nil
}
