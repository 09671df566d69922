package main

import (
	"errors"
	"flag"
	"fmt"
	"os"

	"sigs.k8s.io/yaml"

	"github.com/medops/medops/api/v1alpha1"
)

// cmdWorkloadConfig takes the config.yaml the operator rendered into the
// ConfigMap and rewrites only what must differ outside the pod: the listen
// address, the data folder and the token file path. Everything else (modules,
// cache, upstreams, limits) is passed through untouched, so the process the
// script runs behaves as the pod would. It first checks that the rendered
// file decodes strictly as the one WorkloadConfig schema and validates, which
// is what medops-api does at start-up in the pod.
func cmdWorkloadConfig(args []string) error {
	fs := flag.NewFlagSet("workload-config", flag.ContinueOnError)
	in := fs.String("in", "", "config.yaml as rendered by the operator")
	out := fs.String("out", "", "where to write the rewritten config")
	listen := fs.String("listen", "", "listen address to use instead of the pod's")
	dataDir := fs.String("data-dir", "", "data folder to use instead of the pod's volume")
	tokenFile := fs.String("token-file", "", "token file to use instead of the pod's Secret mount, if the config names one")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *in == "" || *out == "" || *listen == "" || *dataDir == "" {
		return errors.New("workload-config: --in, --out, --listen and --data-dir are required")
	}
	raw, err := os.ReadFile(*in)
	if err != nil {
		return fmt.Errorf("workload-config: %w", err)
	}
	rewritten, err := rewriteWorkloadConfig(raw, *listen, *dataDir, *tokenFile)
	if err != nil {
		return fmt.Errorf("workload-config: %s: %w", *in, err)
	}
	if err := os.WriteFile(*out, rewritten, 0o600); err != nil {
		return fmt.Errorf("workload-config: %w", err)
	}
	return nil
}

// rewriteWorkloadConfig works on a generic map rather than the typed struct,
// so that fields this tool does not know about survive the rewrite as well.
func rewriteWorkloadConfig(raw []byte, listen, dataDir, tokenFile string) ([]byte, error) {
	var typed v1alpha1.WorkloadConfig
	if err := yaml.UnmarshalStrict(raw, &typed); err != nil {
		return nil, fmt.Errorf("rendered config does not match the WorkloadConfig schema: %w", err)
	}
	typed.SetDefaults()
	if errs := typed.Validate(); len(errs) > 0 {
		return nil, fmt.Errorf("rendered config is invalid: %w", errs.ToAggregate())
	}

	var m map[string]any
	if err := yaml.Unmarshal(raw, &m); err != nil {
		return nil, fmt.Errorf("parse: %w", err)
	}
	if m == nil {
		m = map[string]any{}
	}
	m["listen"] = listen
	m["dataDir"] = dataDir
	// Only a token file the operator configured is moved: adding one where
	// the operator wrote none would hide a MedOpsAPI rendered without auth.
	if auth, _ := m["auth"].(map[string]any); auth != nil && tokenFile != "" {
		if _, ok := auth["tokenFile"]; ok {
			auth["tokenFile"] = tokenFile
		}
	}
	return yaml.Marshal(m)
}
