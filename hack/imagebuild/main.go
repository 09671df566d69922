// Command imagebuild writes the MedOps images as multi-arch OCI archives
// without a container engine (`make images`):
//
//	go run ./hack/imagebuild -out dist -platforms linux/amd64,linux/arm64,linux/arm/v7 \
//	    -operator-image ghcr.io/medops/medops-operator:v0.1.0 -api-image ghcr.io/medops/medops-api:v0.1.0
//
// It writes dist/medops-operator.oci.tar and dist/medops-api.oci.tar; load
// them on a node with `k3s ctr images import dist/medops-api.oci.tar`.
// SOURCE_DATE_EPOCH sets the image times (default: 1970), so the same
// sources give the same image digests.
package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"strconv"
	"time"

	"github.com/medops/medops/internal/ociimage"
)

func main() {
	out := flag.String("out", "dist", "output folder")
	platforms := flag.String("platforms", "linux/amd64,linux/arm64,linux/arm/v7", "comma-separated os/arch[/variant] list")
	operatorRef := flag.String("operator-image", "ghcr.io/medops/medops-operator:dev", "reference the operator archive is tagged with")
	apiRef := flag.String("api-image", "ghcr.io/medops/medops-api:dev", "reference the medops-api archive is tagged with")
	version := flag.String("version", "dev", "org.opencontainers.image.version label")
	revision := flag.String("revision", "unknown", "org.opencontainers.image.revision label (git commit)")
	caBundle := flag.String("ca-bundle", "/etc/ssl/certs/ca-certificates.crt", "PEM CA bundle to include (empty: none)")
	only := flag.String("only", "", "build only this program (medops-operator or medops-api)")
	flag.Parse()

	log := slog.New(slog.NewTextHandler(os.Stderr, nil))
	if err := run(log, *out, *platforms, *operatorRef, *apiRef, *version, *revision, *caBundle, *only); err != nil {
		log.Error("image build failed", "err", err)
		os.Exit(1)
	}
}

func run(log *slog.Logger, out, platforms, operatorRef, apiRef, version, revision, caBundle, only string) error {
	plats, err := ociimage.ParsePlatforms(platforms)
	if err != nil {
		return err
	}
	created, err := sourceDateEpoch(os.Getenv("SOURCE_DATE_EPOCH"))
	if err != nil {
		return err
	}
	progs := ociimage.DefaultPrograms(operatorRef, apiRef)
	if only != "" {
		var kept []ociimage.Program
		for _, p := range progs {
			if p.Name == only {
				kept = append(kept, p)
			}
		}
		if len(kept) == 0 {
			return fmt.Errorf("-only %q: want medops-operator or medops-api", only)
		}
		progs = kept
	}
	wd, err := os.Getwd()
	if err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	_, err = ociimage.Build(ctx, ociimage.Options{
		ModuleDir: wd, OutDir: out, Programs: progs, Platforms: plats,
		Version: version, Revision: revision, Created: created, CABundle: caBundle, Log: log,
	})
	return err
}

// sourceDateEpoch reads SOURCE_DATE_EPOCH (reproducible-builds.org); unset means 1970.
func sourceDateEpoch(s string) (time.Time, error) {
	if s == "" {
		return time.Unix(0, 0).UTC(), nil
	}
	sec, err := strconv.ParseInt(s, 10, 64)
	if err != nil || sec < 0 {
		return time.Time{}, fmt.Errorf("SOURCE_DATE_EPOCH=%q: want seconds since 1970", s)
	}
	return time.Unix(sec, 0).UTC(), nil
}
