//go:build e2e

package journey

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"sigs.k8s.io/yaml"

	"github.com/medops/medops/api/v1alpha1"
	"github.com/medops/medops/hack/e2e/cluster"
	"github.com/medops/medops/internal/ociimage"
	"github.com/medops/medops/internal/pgtest"
)

// operatorImage is the reference the chart deploys by default: its
// repository at the chart's appVersion.
func (s *suite) operatorImage(t *testing.T) string {
	var chart struct {
		AppVersion string `json:"appVersion"`
	}
	b, err := os.ReadFile(filepath.Join(s.root, "charts", "medops-operator", "Chart.yaml"))
	if err == nil {
		err = yaml.Unmarshal(b, &chart)
	}
	if err != nil || chart.AppVersion == "" {
		t.Fatalf("reading the chart's appVersion: %v", err)
	}
	return "ghcr.io/medops/medops-operator:" + chart.AppVersion
}

// buildImages builds the images as `make images` does (internal/ociimage),
// for the real nodes' architectures: medops-api and the pause image (the
// nodes' sandbox) for linux/amd64 and linux/arm64, one multi-arch archive
// each, as a registry would serve them; the operator for linux/amd64 only
// (the suite installs it with an amd64 nodeSelector), and Traefik's image
// from its pinned binary. They are tagged with
// the references the chart and the MedOpsAPI default use, so nothing is
// overridden at install time.
func (s *suite) buildImages(t *testing.T) (all, arm64 []string) {
	progs := ociimage.DefaultPrograms(s.operatorImage(t), v1alpha1.DefaultImage)
	ca := "/etc/ssl/certs/ca-certificates.crt"
	if _, err := os.Stat(ca); err != nil {
		ca = ""
	}
	linuxAMD64 := ociimage.Platform{OS: "linux", Arch: "amd64"}
	linuxARM64 := ociimage.Platform{OS: "linux", Arch: "arm64"}
	for _, b := range []struct {
		progs     []ociimage.Program
		platforms []ociimage.Platform
	}{
		{progs[:1], []ociimage.Platform{linuxAMD64}}, // the operator
		{[]ociimage.Program{progs[1], ociimage.PauseProgram(cluster.PauseImage)}, []ociimage.Platform{linuxAMD64, linuxARM64}},
		{[]ociimage.Program{s.traefikProgram()}, []ociimage.Platform{linuxAMD64}},
	} {
		t0 := time.Now()
		p, err := ociimage.Build(s.ctx, ociimage.Options{
			ModuleDir: s.root, OutDir: filepath.Join(s.work, "images"), Programs: b.progs, Platforms: b.platforms,
			Version: "e2e", Revision: "e2e", Created: time.Unix(0, 0).UTC(), CABundle: ca, Log: s.log,
		})
		if err != nil {
			t.Fatalf("building the images: %v", err)
		}
		s.log.Info("images built", "took", time.Since(t0).Round(time.Second), "archives", p)
		all = append(all, p...)
		if len(b.platforms) > 1 {
			arm64 = append(arm64, p...)
		}
	}
	return all, arm64
}

// startLocalPath plays k3s's local-path provisioner: for a claim of class
// local-path that the scheduler placed on a node (WaitForFirstConsumer), it
// makes a folder in the work folder, writable by any user as local-path
// makes it, and a hostPath PV pinned to that node, which the PV controller
// binds. On the real node the kubelet mounts that folder into the pod.
func (s *suite) startLocalPath() error {
	sc := `apiVersion: storage.k8s.io/v1
kind: StorageClass
metadata:
  name: local-path
  annotations:
    storageclass.kubernetes.io/is-default-class: "true"
provisioner: rancher.io/local-path
volumeBindingMode: WaitForFirstConsumer
reclaimPolicy: Delete
`
	if err := s.apply(sc); err != nil {
		return fmt.Errorf("local-path StorageClass: %w", err)
	}
	ctx, cancel := context.WithCancel(s.ctx)
	done := make(chan struct{})
	prev := s.stopBackground
	s.stopBackground = func() {
		cancel()
		<-done
		if prev != nil {
			prev()
		}
	}
	tmpl := `{{range .items}}{{if and (not .spec.volumeName) (eq (or .spec.storageClassName "") "local-path")}}` +
		`{{$node := ""}}{{with .metadata.annotations}}{{with index . "volume.kubernetes.io/selected-node"}}{{$node = .}}{{end}}{{end}}` +
		`{{if $node}}{{.metadata.namespace}} {{.metadata.name}} {{.metadata.uid}} {{$node}} {{.spec.resources.requests.storage}}{{"\n"}}{{end}}{{end}}{{end}}`
	go func() {
		defer close(done)
		for ctx.Err() == nil {
			out, _ := s.c.Kubectl(ctx, "get", "pvc", "-A", "-o", "go-template="+tmpl)
			for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
				f := strings.Fields(line)
				if len(f) != 5 {
					continue
				}
				ns, name, uid, node, size := f[0], f[1], f[2], f[3], f[4]
				pv := "pvc-" + uid
				if _, err := s.c.Kubectl(ctx, "get", "pv", pv); err == nil {
					continue
				}
				dir := filepath.Join(s.work, "storage", pv+"_"+ns+"_"+name)
				if err := os.MkdirAll(dir, 0o777); err == nil {
					_ = os.Chmod(dir, 0o777) // past the umask, as local-path's helper pod does
				}
				s.log.Info("local-path: provisioning", "pv", pv, "claim", ns+"/"+name, "node", node, "dir", dir)
				if err := s.apply(fmt.Sprintf(`apiVersion: v1
kind: PersistentVolume
metadata:
  name: %s
  annotations: {pv.kubernetes.io/provisioned-by: rancher.io/local-path}
spec:
  capacity: {storage: %s}
  accessModes: [ReadWriteOnce]
  persistentVolumeReclaimPolicy: Delete
  storageClassName: local-path
  claimRef: {apiVersion: v1, kind: PersistentVolumeClaim, namespace: %s, name: %s, uid: %s}
  hostPath: {path: %s, type: Directory}
  nodeAffinity:
    required:
      nodeSelectorTerms:
      - matchExpressions:
        - {key: kubernetes.io/hostname, operator: In, values: [%s]}
`, pv, size, ns, name, uid, dir, node)); err != nil {
					s.log.Warn("local-path: creating the PV failed; retrying", "pv", pv, "err", err)
				}
			}
			select {
			case <-ctx.Done():
			case <-time.After(time.Second):
			}
		}
	}()
	return nil
}

// apply runs kubectl apply with the manifest on stdin.
func (s *suite) apply(manifest string) error {
	_, err := s.c.KubectlStdin(s.ctx, manifest, "apply", "-f", "-")
	return err
}

// startPostgres runs a real PostgreSQL 15 (internal/pgtest: initdb, the
// postmaster as nobody) on the amd64 node's address, where the pods of both
// nodes reach it, as a CloudNativePG cluster's Service would be reached. It
// takes password logins from the pods' ranges and the node; the HA sample's Secret carries
// its URI.
func (s *suite) startPostgres() error {
	bin, err := pgtest.BinDir()
	if err != nil {
		return fmt.Errorf("%w: install PostgreSQL 15 with hack/install-postgres.sh (.ci/run does)", err)
	}
	// The pods, and the suite itself (its connections to the node's
	// address come from that address).
	pg, err := pgtest.LaunchOn(bin, cluster.NodeIP, cluster.ClusterCIDR, cluster.NodeIP+"/32")
	if err != nil {
		return fmt.Errorf("starting PostgreSQL on %s: %w", cluster.NodeIP, err)
	}
	s.pg = pg
	if err := s.c.TrackProcess("postgres", pg.PID()); err != nil {
		return err
	}
	s.log.Info("PostgreSQL runs", "addr", fmt.Sprintf("%s:%d", cluster.NodeIP, pg.Port))
	prev := s.stopBackground
	s.stopBackground = func() {
		// Before the cluster goes: the node's address is taken off lo then.
		if err := pg.Close(); err != nil {
			s.log.Warn("removing PostgreSQL's folder", "err", err)
		}
		if prev != nil {
			prev()
		}
	}
	return nil
}
