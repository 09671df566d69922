// Command medops-operator runs the MedOpsAPI controller: it turns each
// MedOpsAPI into a Deployment, Service, ConfigMap and the optional children,
// and reports their state in the MedOpsAPI's status.
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"

	"github.com/go-logr/logr"
	"k8s.io/klog/v2"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client/config"

	"github.com/medops/medops/operator"
)

func main() {
	if err := run(ctrl.SetupSignalHandler(), os.Args[1:], os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, "medops-operator:", err)
		os.Exit(1)
	}
}

// run parses args, builds the manager with operator.NewManager (the setup
// tests and benchmarks use too) and runs it until ctx ends.
func run(ctx context.Context, args []string, stderr io.Writer) error {
	var (
		o         operator.Options
		watchNS   string
		logLevel  string
		logFormat string
	)
	fs := flag.NewFlagSet("medops-operator", flag.ContinueOnError)
	fs.SetOutput(stderr)
	config.RegisterFlags(fs) // --kubeconfig; KUBECONFIG and in-cluster config work too
	fs.StringVar(&o.MetricsBindAddress, "metrics-bind-address", ":8443", `address of the metrics endpoint ("0" turns it off)`)
	fs.BoolVar(&o.MetricsSecure, "metrics-secure", true, "serve metrics over HTTPS, authenticated and authorized through the apiserver")
	fs.BoolVar(&o.EnableHTTP2, "enable-http2", false, "allow HTTP/2 on the metrics server")
	fs.StringVar(&o.HealthProbeBindAddress, "health-probe-bind-address", ":8081", "address of /healthz and /readyz")
	fs.BoolVar(&o.LeaderElection, "leader-elect", false, "elect a leader, so that only one replica reconciles")
	fs.StringVar(&o.LeaderElectionNamespace, "leader-election-namespace", "", "namespace of the leader election Lease (default: the pod's namespace)")
	fs.StringVar(&watchNS, "watch-namespace", "", "comma-separated namespaces to watch (default: all namespaces)")
	fs.IntVar(&o.MaxConcurrentReconciles, "max-concurrent-reconciles", 4, "number of MedOpsAPIs reconciled at once (reconciles mostly wait on the apiserver)")
	fs.StringVar(&logLevel, "log-level", "info", "log level: debug, info, warn or error")
	fs.StringVar(&logFormat, "log-format", "json", "log format: json or text")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if o.MaxConcurrentReconciles < 1 {
		return fmt.Errorf("--max-concurrent-reconciles must be at least 1, got %d", o.MaxConcurrentReconciles)
	}
	o.WatchNamespaces = splitList(watchNS)

	var level slog.Level
	if err := level.UnmarshalText([]byte(logLevel)); err != nil {
		return fmt.Errorf("--log-level: %w", err)
	}
	hopts := &slog.HandlerOptions{Level: level}
	var h slog.Handler
	switch logFormat {
	case "json":
		h = slog.NewJSONHandler(stderr, hopts)
	case "text":
		h = slog.NewTextHandler(stderr, hopts)
	default:
		return fmt.Errorf("--log-format must be json or text, got %q", logFormat)
	}
	log := logr.FromSlogHandler(h)
	o.Logger = log
	ctrl.SetLogger(log)
	klog.SetLogger(log) // client-go's own logs (leader election, watches) go the same way

	cfg, err := ctrl.GetConfig()
	if err != nil {
		return fmt.Errorf("load kubeconfig: %w", err)
	}
	mgr, err := operator.NewManager(cfg, o)
	if err != nil {
		return err
	}
	log.Info("starting medops-operator", "watchNamespaces", o.WatchNamespaces, "leaderElection", o.LeaderElection,
		"maxConcurrentReconciles", o.MaxConcurrentReconciles)
	if err := mgr.Start(ctx); err != nil {
		return fmt.Errorf("run manager: %w", err)
	}
	return nil
}

// splitList splits a comma-separated flag value, dropping blanks.
func splitList(s string) []string {
	var out []string
	for _, p := range strings.Split(s, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}
