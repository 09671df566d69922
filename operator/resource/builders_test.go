package resource_test

import (
	"errors"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	autoscalingv2 "k8s.io/api/autoscaling/v2"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	apiresource "k8s.io/apimachinery/pkg/api/resource"
	utilerrors "k8s.io/apimachinery/pkg/util/errors"
	"k8s.io/apimachinery/pkg/util/validation/field"
	"sigs.k8s.io/yaml"

	"github.com/medops/medops/api/v1alpha1"
	"github.com/medops/medops/operator/resource"
)

// fromSpec makes a MedOpsAPI named medops in namespace lab from a YAML spec.
func fromSpec(t *testing.T, spec string) *v1alpha1.MedOpsAPI {
	t.Helper()
	return load(t, scenario{name: t.Name(), spec: spec})
}

func children(t *testing.T, m *v1alpha1.MedOpsAPI, in resource.Inputs) map[string]resource.Child {
	t.Helper()
	cs := prepare(t, m, in).Children(resource.Kinds())
	out := map[string]resource.Child{}
	for _, c := range cs {
		k := kindOf(c.Object)
		if c.Object.GetName() == resource.MemcachedName(m) {
			k = "memcached/" + k // the shared cache tier's rows
		}
		out[k] = c
	}
	return out
}

func deployment(t *testing.T, m *v1alpha1.MedOpsAPI, in resource.Inputs) *appsv1.Deployment {
	t.Helper()
	return resource.BuildDeployment(prepare(t, m, in))
}

// TestEveryChildIsLabelledTypedAndOwned checks what server-side apply and
// garbage collection rely on, for every wanted child of every scenario.
func TestEveryChildIsLabelledTypedAndOwned(t *testing.T) {
	for _, sc := range scenarios() {
		t.Run(sc.name, func(t *testing.T) {
			m := load(t, sc)
			kinds := resource.Kinds()
			cs := prepare(t, m, inputsFor(m)).Children(kinds)
			seen := map[string]bool{}
			for _, c := range cs {
				gvk := c.Object.GetObjectKind().GroupVersionKind()
				if gvk.Kind == "" || gvk.Version == "" {
					t.Errorf("%T %s has no apiVersion/kind", c.Object, c.Object.GetName())
				}
				id := gvk.Kind + "/" + c.Object.GetName()
				if seen[id] {
					t.Errorf("%s listed twice", id)
				}
				seen[id], seen[gvk.Kind] = true, true
				if c.Object.GetNamespace() != m.Namespace {
					t.Errorf("%s in namespace %q, want %q", gvk.Kind, c.Object.GetNamespace(), m.Namespace)
				}
				if !c.Wanted {
					continue
				}
				l := c.Object.GetLabels()
				app := "medops-api"
				if c.Object.GetName() == resource.MemcachedName(m) {
					app = "memcached" // never selected by the API's Service, PDB or NetworkPolicy
				}
				for k, v := range map[string]string{
					"app.kubernetes.io/name": app, "app.kubernetes.io/instance": m.Name,
					"app.kubernetes.io/managed-by": "medops-operator", "app.kubernetes.io/part-of": "medops",
				} {
					if l[k] != v {
						t.Errorf("%s label %s = %q, want %q", gvk.Kind, k, l[k], v)
					}
				}
				refs := c.Object.GetOwnerReferences()
				retainedPVC := gvk.Kind == "PersistentVolumeClaim" && m.Spec.Storage.RetainStorage()
				switch {
				case retainedPVC && len(refs) != 0:
					t.Errorf("retained PVC has owner references %v", refs)
				case !retainedPVC && (len(refs) != 1 || refs[0].UID != m.UID || refs[0].Controller == nil || !*refs[0].Controller ||
					refs[0].BlockOwnerDeletion == nil || !*refs[0].BlockOwnerDeletion || refs[0].Kind != "MedOpsAPI"):
					t.Errorf("%s owner references = %+v, want one controller reference to the MedOpsAPI", gvk.Kind, refs)
				}
			}
			for _, k := range kinds {
				if !seen[k.GVK.Kind] {
					t.Errorf("Children lacks %s (wanted or absent)", k.GVK.Kind)
				}
			}
			if len(cs) != len(kinds) {
				t.Errorf("%d children for %d kinds", len(cs), len(kinds))
			}
			// The Deployment reads the ConfigMap: apply order matters.
			if idx(cs, "ConfigMap") > idx(cs, "Deployment") || idx(cs, "ServiceAccount") > idx(cs, "Deployment") {
				t.Errorf("ConfigMap and ServiceAccount must come before the Deployment")
			}
		})
	}
}

func idx(cs []resource.Child, kind string) int {
	for i, c := range cs {
		if kindOf(c.Object) == kind && !strings.HasSuffix(c.Object.GetName(), "-memcached") {
			return i
		}
	}
	return -1
}

func TestAutoscalingLeavesReplicasToTheHPA(t *testing.T) {
	m := fromSpec(t, `
autoscaling: {minReplicas: 2, maxReplicas: 5}
storage: {postgres: {secretRef: {name: db-app}}}`)
	cs := children(t, m, inputsFor(m))
	dep := cs["Deployment"].Object.(*appsv1.Deployment)
	if dep.Spec.Replicas != nil {
		t.Errorf("Deployment sets replicas %d with autoscaling; the HPA must own it", *dep.Spec.Replicas)
	}
	hpa, ok := cs["HorizontalPodAutoscaler"].Object.(*autoscalingv2.HorizontalPodAutoscaler)
	if !ok || !cs["HorizontalPodAutoscaler"].Wanted {
		t.Fatal("no wanted HPA with autoscaling")
	}
	if *hpa.Spec.MinReplicas != 2 || hpa.Spec.MaxReplicas != 5 || hpa.Spec.ScaleTargetRef.Name != dep.Name ||
		hpa.Spec.ScaleTargetRef.Kind != "Deployment" || *hpa.Spec.Metrics[0].Resource.Target.AverageUtilization != v1alpha1.DefaultTargetCPUUtilization {
		t.Errorf("HPA spec = %+v", hpa.Spec)
	}

	m = fromSpec(t, `
replicas: 3
storage: {postgres: {secretRef: {name: db-app}}}`)
	cs = children(t, m, inputsFor(m))
	if r := cs["Deployment"].Object.(*appsv1.Deployment).Spec.Replicas; r == nil || *r != 3 {
		t.Errorf("without autoscaling replicas = %v, want 3", r)
	}
	if cs["HorizontalPodAutoscaler"].Wanted {
		t.Error("HPA wanted without autoscaling")
	}
}

func TestArchitecturesBecomeRequiredNodeAffinity(t *testing.T) {
	cases := []struct {
		name, spec string
		want       [][]string // per node selector term: the keys of its expressions
	}{
		{"arch only", `architectures: [arm64]`, [][]string{{"kubernetes.io/arch"}}},
		{"no arch, no affinity", `{}`, nil},
		{"arch added to each user term", `
architectures: [arm64, arm]
affinity:
  nodeAffinity:
    requiredDuringSchedulingIgnoredDuringExecution:
      nodeSelectorTerms:
      - matchExpressions: [{key: zone, operator: In, values: [a]}]
      - matchExpressions: [{key: pi, operator: Exists}]`, [][]string{{"zone", "kubernetes.io/arch"}, {"pi", "kubernetes.io/arch"}}},
		{"user pod anti-affinity kept", `
architectures: [amd64]
affinity:
  podAntiAffinity:
    preferredDuringSchedulingIgnoredDuringExecution:
    - weight: 1
      podAffinityTerm: {topologyKey: kubernetes.io/hostname}`, [][]string{{"kubernetes.io/arch"}}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			m := fromSpec(t, tc.spec)
			before := m.DeepCopy()
			a := deployment(t, m, inputsFor(m)).Spec.Template.Spec.Affinity
			if tc.want == nil {
				if a != nil {
					t.Errorf("affinity = %+v, want none", a)
				}
				return
			}
			terms := a.NodeAffinity.RequiredDuringSchedulingIgnoredDuringExecution.NodeSelectorTerms
			if len(terms) != len(tc.want) {
				t.Fatalf("%d terms, want %d: %+v", len(terms), len(tc.want), terms)
			}
			for i, term := range terms {
				var keys []string
				for _, e := range term.MatchExpressions {
					keys = append(keys, e.Key)
					if e.Key == "kubernetes.io/arch" && (e.Operator != corev1.NodeSelectorOpIn || len(e.Values) != len(m.Spec.Architectures)) {
						t.Errorf("arch expression = %+v", e)
					}
				}
				if strings.Join(keys, ",") != strings.Join(tc.want[i], ",") {
					t.Errorf("term %d keys = %v, want %v", i, keys, tc.want[i])
				}
			}
			if m.Spec.Affinity != nil && a.PodAntiAffinity == nil && before.Spec.Affinity.PodAntiAffinity != nil {
				t.Error("user pod anti-affinity lost")
			}
			if !equalYAML(t, before, m) {
				t.Error("BuildDeployment modified the MedOpsAPI it was given")
			}
		})
	}
}

func TestPVCRetention(t *testing.T) {
	for _, tc := range []struct {
		spec      string
		wantOwner bool
	}{
		{`{}`, false}, // the default task store is a retained 1Gi claim
		{`storage: {size: 1Gi}`, false},
		{`storage: {size: 1Gi, retainOnDelete: true}`, false},
		{`storage: {size: 1Gi, retainOnDelete: false}`, true},
	} {
		m := fromSpec(t, tc.spec)
		pvc := resource.BuildPVC(prepare(t, m, resource.Inputs{}))
		if pvc == nil {
			t.Fatalf("%s: no PVC", tc.spec)
		}
		if got := len(pvc.OwnerReferences) > 0; got != tc.wantOwner {
			t.Errorf("%s: PVC has owner reference = %v, want %v", tc.spec, got, tc.wantOwner)
		}
		if q := pvc.Spec.Resources.Requests[corev1.ResourceStorage]; q.String() != "1Gi" {
			t.Errorf("%s: PVC requests %s", tc.spec, q.String())
		}
		if pvc.Spec.StorageClassName != nil {
			t.Errorf("%s: PVC class %q, want none (the cluster's default class)", tc.spec, *pvc.Spec.StorageClassName)
		}
	}
	for _, spec := range []string{
		`storage: {ephemeral: true}`,
		`storage: {postgres: {secretRef: {name: medops-db-app}}}`,
		`modules: {tasks: {enabled: false}, gateway: {enabled: true, upstreams: [{name: a, url: "https://a.example"}]}}`,
	} {
		if pvc := resource.BuildPVC(prepare(t, fromSpec(t, spec), resource.Inputs{})); pvc != nil {
			t.Errorf("%s: builds a PVC", spec)
		}
	}
}

func TestStorageDecidesStrategyAndDataVolume(t *testing.T) {
	// data is what backs /var/lib/medops: "claim", "emptyDir" or "" (no
	// volume: nothing writes there).
	cases := []struct {
		spec     string
		strategy appsv1.DeploymentStrategyType
		data     string
	}{
		{`{}`, appsv1.RecreateDeploymentStrategyType, "claim"},
		{`storage: {size: 1Gi}`, appsv1.RecreateDeploymentStrategyType, "claim"},
		{`storage: {ephemeral: true, size: 128Mi}`, appsv1.RollingUpdateDeploymentStrategyType, "emptyDir"},
		{`storage: {postgres: {secretRef: {name: medops-db-app}}}`, appsv1.RollingUpdateDeploymentStrategyType, ""},
		{`modules: {tasks: {enabled: false}, gateway: {enabled: true, upstreams: [{name: a, url: "https://a.example"}]}}`,
			appsv1.RollingUpdateDeploymentStrategyType, ""},
	}
	for _, tc := range cases {
		d := prepare(t, fromSpec(t, tc.spec), resource.Inputs{})
		dep := resource.BuildDeployment(d)
		if dep.Spec.Strategy.Type != tc.strategy {
			t.Errorf("%s: strategy %s, want %s", tc.spec, dep.Spec.Strategy.Type, tc.strategy)
		}
		// A recreated pod has no peer for load balancers to move to: no
		// drain delay and no preStop sleep, each of which would only
		// delay its successor. A rolling update keeps both.
		delay := d.Config.Server.ShutdownDelay.Duration
		recreate := tc.strategy == appsv1.RecreateDeploymentStrategyType
		if recreate && delay != 0 || !recreate && delay <= 0 {
			t.Errorf("%s: rendered server.shutdownDelay %s with strategy %s", tc.spec, delay, tc.strategy)
		}
		if lc := dep.Spec.Template.Spec.Containers[0].Lifecycle; recreate && lc != nil ||
			!recreate && (lc == nil || lc.PreStop == nil || lc.PreStop.Sleep == nil || lc.PreStop.Sleep.Seconds != resource.PreStopSleepSeconds) {
			t.Errorf("%s: lifecycle %+v with strategy %s; want a %ds preStop sleep only with RollingUpdate", tc.spec, lc, tc.strategy, resource.PreStopSleepSeconds)
		}
		if ru := dep.Spec.Strategy.RollingUpdate; tc.strategy == appsv1.RollingUpdateDeploymentStrategyType &&
			(ru == nil || ru.MaxUnavailable.IntValue() != 0) {
			t.Errorf("%s: rolling update must keep maxUnavailable 0, got %+v", tc.spec, ru)
		}
		data := ""
		for _, v := range dep.Spec.Template.Spec.Volumes {
			switch {
			case v.Name != "data":
			case v.PersistentVolumeClaim != nil && v.PersistentVolumeClaim.ClaimName == "medops-data":
				data = "claim"
			case v.EmptyDir != nil:
				data = "emptyDir"
			default:
				data = "other"
			}
		}
		mounted := false
		for _, vm := range dep.Spec.Template.Spec.Containers[0].VolumeMounts {
			mounted = mounted || (vm.Name == "data" && vm.MountPath == resource.DataDir)
		}
		if data != tc.data || mounted != (tc.data != "") {
			t.Errorf("%s: data volume %q mounted %v, want %q", tc.spec, data, mounted, tc.data)
		}
	}
}

// TestPostgresSecretIsMountedAsTheDSNFile: the rendered config names a file,
// the pod has exactly that file from the one Secret key, read-only, and the
// connection string is nowhere in the ConfigMap or the environment.
func TestPostgresSecretIsMountedAsTheDSNFile(t *testing.T) {
	for _, tc := range []struct{ spec, key string }{
		{`storage: {postgres: {secretRef: {name: medops-db-app}}}`, "uri"},
		{`storage: {postgres: {secretRef: {name: medops-db-app, key: dsn}}}`, "dsn"},
	} {
		m := fromSpec(t, tc.spec)
		d := prepare(t, m, inputsFor(m))
		if got := d.Config.PostgresDSNFile(); got != resource.PostgresFile {
			t.Errorf("%s: postgres.dsnFile = %q, want %q", tc.spec, got, resource.PostgresFile)
		}
		dep := resource.BuildDeployment(d)
		pod := dep.Spec.Template.Spec
		var vol *corev1.SecretVolumeSource
		for _, v := range pod.Volumes {
			if v.Secret != nil && v.Secret.SecretName == "medops-db-app" {
				vol = v.Secret
			}
		}
		if vol == nil {
			t.Fatalf("%s: Secret medops-db-app not mounted; volumes %+v", tc.spec, pod.Volumes)
		}
		if len(vol.Items) != 1 || vol.Items[0].Key != tc.key {
			t.Errorf("%s: Secret items %+v, want only key %q", tc.spec, vol.Items, tc.key)
		}
		if vol.DefaultMode == nil || *vol.DefaultMode&0o007 != 0 || *vol.DefaultMode&0o040 == 0 {
			t.Errorf("%s: mode %v, want readable by the pod's group (fsGroup), not by others", tc.spec, vol.DefaultMode)
		}
		if fsg := pod.SecurityContext.FSGroup; fsg == nil || *fsg != resource.NonRootUID {
			t.Errorf("%s: fsGroup %v, want %d so the non-root user reads the file", tc.spec, fsg, resource.NonRootUID)
		}
		c := pod.Containers[0]
		found := false
		for _, vm := range c.VolumeMounts {
			for _, v := range pod.Volumes {
				if v.Name == vm.Name && v.Secret == vol {
					found = vm.ReadOnly && vm.SubPath == "" && vm.MountPath+"/"+vol.Items[0].Path == d.Config.PostgresDSNFile()
				}
			}
		}
		if !found {
			t.Errorf("%s: mounts %+v: want the Secret read-only at the dsnFile, without subPath (a subPath file is never updated)", tc.spec, c.VolumeMounts)
		}
		for _, e := range c.Env {
			if e.ValueFrom != nil && e.ValueFrom.SecretKeyRef != nil {
				t.Errorf("%s: env %s comes from a Secret", tc.spec, e.Name)
			}
		}
		if raw := resource.BuildConfigMap(d).Data[resource.ConfigKey]; !strings.Contains(raw, "dsnFile: "+resource.PostgresFile) {
			t.Errorf("%s: ConfigMap does not name the DSN file:\n%s", tc.spec, raw)
		}
	}
	// Without postgres the config names no DSN file and no Secret but the
	// token is mounted.
	m := fromSpec(t, `{}`)
	d := prepare(t, m, inputsFor(m))
	if d.Config.PostgresDSNFile() != "" {
		t.Errorf("default storage renders postgres.dsnFile %q", d.Config.PostgresDSNFile())
	}
}

// TestConfigHash checks when pods roll: on a new cache setting, never on a
// change the Deployment rolls out by itself (or not at all), nor on a new
// token Secret (medops-api follows the mounted token file).
func TestConfigHash(t *testing.T) {
	base := `cache: {size: 32Mi, ttl: 5m}`
	in := resource.Inputs{TokenSecretName: "medops-token"}
	h0 := hashOf(t, fromSpec(t, base), in)
	cases := []struct {
		name   string
		spec   string
		in     resource.Inputs
		differ bool
	}{
		{"same spec", base, in, false},
		{"replicas change", base + "\nreplicas: 1", in, false},
		{"cache ttl", `cache: {size: 32Mi, ttl: 6m}`, in, true},
		{"cache size", `cache: {size: 64Mi, ttl: 5m}`, in, true},
		{"cache rule", `cache: {size: 32Mi, ttl: 5m, rules: [{pathPrefix: /api/v1/gateway/, ttl: 1h}]}`, in, true},
		{"pod annotation", base + "\npodAnnotations: {a: b}", in, false},
		{"another token Secret", base, resource.Inputs{TokenSecretName: "other-token"}, false},
		{"log level", base + "\nlogLevel: debug", in, true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			h := hashOf(t, fromSpec(t, tc.spec), tc.in)
			if (h != h0) != tc.differ {
				t.Errorf("hash %s vs base %s: differ=%v, want %v", h, h0, h != h0, tc.differ)
			}
		})
	}
}

// hashOf returns the pod template annotation and checks it matches the
// Desired's ConfigHash (what status.configHash reports).
func hashOf(t *testing.T, m *v1alpha1.MedOpsAPI, in resource.Inputs) string {
	t.Helper()
	d := prepare(t, m, in)
	ann := resource.BuildDeployment(d).Spec.Template.Annotations[resource.AnnotationConfigHash]
	h := d.ConfigHash
	if ann == "" || ann != h {
		t.Fatalf("pod template hash %q, ConfigHash %q", ann, h)
	}
	return ann
}

// TestConfigMapHoldsTheConfigNotTheToken reads the rendered file back as
// medops-api would and checks it points at the mounted token file.
func TestConfigMapHoldsTheConfigNotTheToken(t *testing.T) {
	const token = "s3cr3t-t0ken-value"
	m := fromSpec(t, `
modules: {gateway: {enabled: true, upstreams: [{name: ensembl, url: "https://rest.ensembl.org", ttl: 1h}]}}
cache: {size: 16Mi, shards: 8, maxEntrySize: 256Ki}
logLevel: warn`)
	secret := resource.BuildTokenSecret(m, []byte(token))
	if string(secret.Data["token"]) != token || len(secret.OwnerReferences) != 1 {
		t.Fatalf("token Secret = %+v", secret)
	}
	cm := resource.BuildConfigMap(prepare(t, m, resource.Inputs{}))
	raw := cm.Data["config.yaml"]
	if strings.Contains(raw, token) {
		t.Fatal("the ConfigMap contains the token")
	}
	var w v1alpha1.WorkloadConfig
	if err := yaml.UnmarshalStrict([]byte(raw), &w); err != nil {
		t.Fatalf("rendered config does not parse as WorkloadConfig: %v", err)
	}
	if errs := w.Validate(); len(errs) > 0 {
		t.Errorf("rendered config invalid: %v", errs)
	}
	if w.Auth.TokenFile != resource.TokenFile || w.Auth.Disabled || w.Listen != ":8080" || w.DataDir != resource.DataDir ||
		w.LogLevel != "warn" || *w.Cache.Shards != 8 || w.Cache.MaxEntrySize.String() != "256Ki" ||
		w.Modules.Gateway.Upstreams[0].TTL.Duration.String() != "1h0m0s" || w.Modules.Gateway.Upstreams[0].Timeout == nil {
		t.Errorf("rendered config = %s", raw)
	}

	// The token file the config names is where the Secret is mounted.
	dep := deployment(t, m, resource.Inputs{TokenSecretName: secret.Name})
	mounted := false
	for _, vm := range dep.Spec.Template.Spec.Containers[0].VolumeMounts {
		if vm.Name == "token" && vm.MountPath+"/token" == w.Auth.TokenFile && vm.ReadOnly {
			mounted = true
		}
	}
	if !mounted {
		t.Error("token Secret is not mounted read-only where the config expects it")
	}
}

func TestAuthDisabledMountsNoToken(t *testing.T) {
	m := fromSpec(t, `auth: {disabled: true}`)
	d := prepare(t, m, resource.Inputs{})
	for _, v := range resource.BuildDeployment(d).Spec.Template.Spec.Volumes {
		if v.Secret != nil {
			t.Errorf("auth disabled but Secret volume %s", v.Name)
		}
	}
	if w := d.Config; !w.Auth.Disabled || w.Auth.TokenFile != "" {
		t.Errorf("auth = %+v, want disabled without token file", d.Config.Auth)
	}
}

func TestUserTokenSecretKeyIsMountedAsToken(t *testing.T) {
	m := fromSpec(t, `auth: {tokenSecretRef: {name: api-token, key: bearer}}`)
	dep := deployment(t, m, resource.Inputs{TokenSecretName: "api-token"})
	for _, v := range dep.Spec.Template.Spec.Volumes {
		if v.Name == "token" {
			if v.Secret.SecretName != "api-token" || v.Secret.Items[0].Key != "bearer" || v.Secret.Items[0].Path != "token" {
				t.Errorf("token volume = %+v", v.Secret)
			}
			return
		}
	}
	t.Error("no token volume")
}

// TestInvalidRenderedConfigIsAFieldError: a spec that bypassed the CRD's
// validation (or a rule the CRD cannot express) yields field errors the
// reconciler reports, naming the config field.
func TestInvalidRenderedConfigIsAFieldError(t *testing.T) {
	m := fromSpec(t, `modules: {gateway: {enabled: true}}`)
	_, err := resource.Prepare(m, resource.Inputs{})
	if err == nil {
		t.Fatal("gateway without upstreams built children")
	}
	var agg utilerrors.Aggregate
	if !errors.As(err, &agg) {
		t.Fatalf("error %v does not wrap the field errors", err)
	}
	var fe *field.Error
	if len(agg.Errors()) != 1 || !errors.As(agg.Errors()[0], &fe) || fe.Field != "modules.gateway.upstreams" {
		t.Errorf("error %v does not carry the field error for modules.gateway.upstreams", err)
	}
	m = fromSpec(t, `modules: {gateway: {enabled: true, upstreams: [{name: a, url: "https://user:pw@a.example"}]}}`)
	if _, err := resource.Prepare(m, resource.Inputs{}); err == nil || !strings.Contains(err.Error(), "must not carry credentials") {
		t.Errorf("upstream with credentials: err = %v", err)
	}
}

// TestSeveralReplicasOnTheClaimAreNotBuilt: a MedOpsAPI stored before the
// CRD refused it (replicas: 3 without storage was an emptyDir then) must not
// become three pods on one ReadWriteOnce claim; the error names the field
// and the way out, as the CEL rule does.
func TestSeveralReplicasOnTheClaimAreNotBuilt(t *testing.T) {
	for _, tc := range []struct{ spec, field string }{
		{`replicas: 3`, "spec.replicas"},
		{"replicas: 2\nstorage: {size: 2Gi}", "spec.replicas"},
		{`autoscaling: {maxReplicas: 3}`, "spec.autoscaling"},
	} {
		_, err := resource.Prepare(fromSpec(t, tc.spec), resource.Inputs{})
		var fe *field.Error
		if !errors.As(err, &fe) || fe.Field != tc.field || !strings.Contains(err.Error(), "set storage.postgres") {
			t.Errorf("%q: err = %v, want a field error on %s naming storage.postgres", tc.spec, err, tc.field)
		}
	}
	for _, spec := range []string{
		`replicas: 1`,
		`replicas: 0`,
		"replicas: 3\nstorage: {ephemeral: true}",
		"replicas: 3\nstorage: {postgres: {secretRef: {name: db-app}}}",
		"autoscaling: {maxReplicas: 3}\nstorage: {postgres: {secretRef: {name: db-app}}}",
		"replicas: 3\nmodules: {tasks: {enabled: false}}",
	} {
		if _, err := resource.Prepare(fromSpec(t, spec), resource.Inputs{}); err != nil {
			t.Errorf("%q: %v", spec, err)
		}
	}
}

func TestPodLabelsNeverOverrideSelector(t *testing.T) {
	m := fromSpec(t, `podLabels: {app.kubernetes.io/instance: other, app.kubernetes.io/name: x, team: genomics}`)
	dep := deployment(t, m, resource.Inputs{})
	l := dep.Spec.Template.Labels
	for k, v := range dep.Spec.Selector.MatchLabels {
		if l[k] != v {
			t.Errorf("pod label %s = %q, selector wants %q", k, l[k], v)
		}
	}
	if l["team"] != "genomics" {
		t.Error("user pod label dropped")
	}
}

// The API's body limit follows ingress.proxyBodySize and nginx gets twice
// that, so the API answers a slightly oversized body with its JSON 413.
func TestBodyLimitReachesTheAPIWithNginxHeadroom(t *testing.T) {
	tests := []struct {
		name, spec         string
		wantNginx, wantAPI string
	}{
		{"default", "ingress: {enabled: true, host: a.example}", "2m", "1Mi"},
		{"typed limit", "ingress: {enabled: true, host: a.example, proxyBodySize: 8Mi}", "16m", "8Mi"},
		{"odd size", "ingress: {enabled: true, host: a.example, proxyBodySize: 1500Ki}", "3000k", "1500Ki"},
		{"user annotation kept", "ingress: {enabled: true, host: a.example, annotations: {nginx.ingress.kubernetes.io/proxy-body-size: 1k}}", "1k", "1Mi"},
		{"typed limit beats annotation", "ingress: {enabled: true, host: a.example, proxyBodySize: 4Mi, annotations: {nginx.ingress.kubernetes.io/proxy-body-size: 1k}}", "8m", "4Mi"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d := prepare(t, fromSpec(t, tt.spec), resource.Inputs{})
			if got := resource.BuildIngress(d).Annotations[resource.AnnotationProxyBodySize]; got != tt.wantNginx {
				t.Errorf("nginx proxy-body-size = %q, want %q", got, tt.wantNginx)
			}
			if got := d.Config.Server.MaxBodySize.String(); got != tt.wantAPI {
				t.Errorf("rendered server.maxBodySize = %s, want %s", got, tt.wantAPI)
			}
		})
	}
}

func TestIngressAnnotationsAndTLS(t *testing.T) {
	m := fromSpec(t, `
ingress:
  enabled: true
  host: api.example.org
  tls: {secretName: api-tls}
  annotations: {nginx.ingress.kubernetes.io/proxy-body-size: 1k, cert-manager.io/cluster-issuer: le}
  proxyBodySize: 8Mi
  proxyReadTimeout: 90s
  limitRPS: 7`)
	ing := resource.BuildIngress(prepare(t, m, resource.Inputs{}))
	want := map[string]string{
		"nginx.ingress.kubernetes.io/proxy-body-size":    "16m",
		"nginx.ingress.kubernetes.io/proxy-read-timeout": "90",
		"nginx.ingress.kubernetes.io/limit-rps":          "7",
		"cert-manager.io/cluster-issuer":                 "le",
	}
	for k, v := range want {
		if ing.Annotations[k] != v {
			t.Errorf("annotation %s = %q, want %q", k, ing.Annotations[k], v)
		}
	}
	if *ing.Spec.IngressClassName != "nginx" || ing.Spec.TLS[0].SecretName != "api-tls" || ing.Spec.TLS[0].Hosts[0] != "api.example.org" ||
		*ing.Spec.Rules[0].HTTP.Paths[0].PathType != networkingv1.PathTypePrefix || ing.Spec.Rules[0].HTTP.Paths[0].Path != "/" {
		t.Errorf("ingress spec = %+v", ing.Spec)
	}
	if got := m.Spec.URL(); got != "https://api.example.org/" {
		t.Errorf("URL = %q", got)
	}
}

// TestRestrictedSecurityAndGracefulShutdown checks the pod-level facts the
// restricted Pod Security Standard and drain-free rollouts depend on.
func TestRestrictedSecurityAndGracefulShutdown(t *testing.T) {
	m := fromSpec(t, `{}`)
	d := prepare(t, m, inputsFor(m))
	ps := resource.BuildDeployment(d).Spec.Template.Spec
	c := ps.Containers[0]
	sc := c.SecurityContext
	if !*ps.SecurityContext.RunAsNonRoot || *ps.SecurityContext.RunAsUser != 65532 || !*sc.ReadOnlyRootFilesystem ||
		*sc.AllowPrivilegeEscalation || sc.Capabilities.Drop[0] != "ALL" || ps.SecurityContext.SeccompProfile.Type != corev1.SeccompProfileTypeRuntimeDefault {
		t.Errorf("security context pod=%+v container=%+v", ps.SecurityContext, sc)
	}
	if *ps.AutomountServiceAccountToken {
		t.Error("service account token is mounted")
	}
	if c.LivenessProbe.HTTPGet.Path != "/healthz" || c.ReadinessProbe.HTTPGet.Path != "/readyz" {
		t.Error("probes do not use /healthz and /readyz")
	}
	// The startup probe's success makes the kubelet probe readiness at
	// once: it must probe often, check that the process serves (not
	// /readyz: a pod waiting for PostgreSQL must not be killed), and give
	// a starting pod no less time than liveness did without it.
	window := func(p *corev1.Probe) int32 { return p.PeriodSeconds * p.FailureThreshold }
	if sp := c.StartupProbe; sp == nil || sp.HTTPGet == nil || sp.HTTPGet.Path != "/healthz" || sp.PeriodSeconds != 1 ||
		window(sp) < window(c.LivenessProbe) {
		t.Errorf("startup probe %+v, want /healthz every second for at least liveness's %ds", sp, window(c.LivenessProbe))
	}
	// Both strategies: the grace period outlasts what the pod does after
	// the kubelet starts stopping it.
	for _, spec := range []string{`{}`, `storage: {ephemeral: true, size: 128Mi}`} {
		m := fromSpec(t, spec)
		d := prepare(t, m, inputsFor(m))
		ps := resource.BuildDeployment(d).Spec.Template.Spec
		w := d.Config
		var preStop int64
		if lc := ps.Containers[0].Lifecycle; lc != nil && lc.PreStop != nil && lc.PreStop.Sleep != nil {
			preStop = lc.PreStop.Sleep.Seconds
		}
		need := preStop + int64((w.Server.ShutdownDelay.Duration + w.Server.ShutdownTimeout.Duration).Seconds())
		if *ps.TerminationGracePeriodSeconds <= need {
			t.Errorf("%s: terminationGracePeriodSeconds %d must exceed preStop %ds + shutdown %ds", spec, *ps.TerminationGracePeriodSeconds, preStop, need-preStop)
		}
	}
	tmp := false
	for _, vm := range c.VolumeMounts {
		tmp = tmp || vm.MountPath == "/tmp"
	}
	if !tmp {
		t.Error("no writable /tmp with a read-only root filesystem")
	}
	// Canonical quantities read back from the apiserver unchanged.
	if q := c.Resources.Requests[corev1.ResourceCPU]; q.String() != "50m" {
		t.Errorf("cpu request %s", q.String())
	}
	if q := c.Resources.Limits[corev1.ResourceMemory]; q.Cmp(apiresource.MustParse("256Mi")) != 0 {
		t.Errorf("memory limit %s", q.String())
	}
}

func equalYAML(t *testing.T, a, b any) bool {
	t.Helper()
	x, err := yaml.Marshal(a)
	if err != nil {
		t.Fatal(err)
	}
	y, err := yaml.Marshal(b)
	if err != nil {
		t.Fatal(err)
	}
	return string(x) == string(y)
}

// TestEphemeralStorageRequestedAndLimited checks that the medops-api
// container requests and limits ephemeral storage in every scenario (a Pi's
// SD card is small), that the limit holds every emptyDir's own size limit
// (or the kubelet would evict a pod before its emptyDir is full), and that a
// value the user sets in spec.resources wins.
func TestEphemeralStorageRequestedAndLimited(t *testing.T) {
	for _, sc := range scenarios() {
		t.Run(sc.name, func(t *testing.T) {
			m := load(t, sc)
			dep := deployment(t, m, inputsFor(m))
			res := dep.Spec.Template.Spec.Containers[0].Resources
			req, hasReq := res.Requests[corev1.ResourceEphemeralStorage]
			limit, hasLimit := res.Limits[corev1.ResourceEphemeralStorage]
			if !hasReq || !hasLimit {
				t.Fatalf("resources %v: want ephemeral-storage requests and limits", res)
			}
			var emptyDirs apiresource.Quantity
			for _, v := range dep.Spec.Template.Spec.Volumes {
				if v.EmptyDir == nil {
					continue
				}
				if v.EmptyDir.SizeLimit == nil {
					t.Errorf("emptyDir %s has no sizeLimit: it could fill the node's disk", v.Name)
					continue
				}
				emptyDirs.Add(*v.EmptyDir.SizeLimit)
			}
			if limit.Cmp(emptyDirs) <= 0 || req.Cmp(limit) > 0 {
				t.Errorf("ephemeral-storage request %s limit %s: want request <= limit and limit above the emptyDirs' %s",
					req.String(), limit.String(), emptyDirs.String())
			}
		})
	}
	m := fromSpec(t, `resources: {requests: {ephemeral-storage: 10Mi}, limits: {ephemeral-storage: 3Gi, memory: 64Mi}}`)
	res := deployment(t, m, resource.Inputs{}).Spec.Template.Spec.Containers[0].Resources
	if r, l := res.Requests[corev1.ResourceEphemeralStorage], res.Limits[corev1.ResourceEphemeralStorage]; r.String() != "10Mi" || l.String() != "3Gi" {
		t.Errorf("user's ephemeral-storage %s/%s replaced, want 10Mi/3Gi", r.String(), l.String())
	}
}

func TestIgnoredIngressSettings(t *testing.T) {
	tests := []struct {
		name, spec string
		want       string
	}{
		{"traefik with nginx-only settings", `ingress: {enabled: true, className: traefik, limitRPS: 5, proxyReadTimeout: 30s}`, "ingress.limitRPS,ingress.proxyReadTimeout"},
		{"traefik with the body size only", `ingress: {enabled: true, className: traefik, proxyBodySize: 2Mi}`, ""},
		{"nginx", `ingress: {enabled: true, className: nginx, limitRPS: 5, proxyReadTimeout: 30s}`, ""},
		{"ingress-nginx under another class name", `ingress: {enabled: true, className: nginx-internal, limitRPS: 5}`, ""},
		{"ingress disabled", `ingress: {enabled: false, className: traefik, limitRPS: 5}`, ""},
	}
	for _, tt := range tests {
		m := fromSpec(t, tt.spec)
		m.Spec.SetDefaults()
		if got := strings.Join(resource.IgnoredIngressSettings(&m.Spec), ","); got != tt.want {
			t.Errorf("%s: ignored %q, want %q", tt.name, got, tt.want)
		}
	}
}

// TestDocsSwitchReachesTheConfig: spec.docs is the workload's own
// DocsSettings type, so switching the /docs page off on the MedOpsAPI
// switches it off in the config the pods read; unset leaves it on.
func TestDocsSwitchReachesTheConfig(t *testing.T) {
	tests := []struct {
		spec string
		want bool
	}{
		{spec: `logLevel: info`, want: true},
		{spec: `docs: {enabled: false}`, want: false},
		{spec: `docs: {enabled: true}`, want: true},
	}
	for _, tt := range tests {
		t.Run(tt.spec, func(t *testing.T) {
			raw := resource.BuildConfigMap(prepare(t, fromSpec(t, tt.spec), resource.Inputs{})).Data["config.yaml"]
			var w v1alpha1.WorkloadConfig
			if err := yaml.UnmarshalStrict([]byte(raw), &w); err != nil {
				t.Fatal(err)
			}
			if got := w.Server.Docs.Enabled != nil && *w.Server.Docs.Enabled; got != tt.want {
				t.Errorf("server.docs.enabled = %v, want %v in\n%s", got, tt.want, raw)
			}
		})
	}
}
