package manifests

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/medops/medops/api/v1alpha1"
	"github.com/medops/medops/internal/repo"
	"github.com/medops/medops/server/config"
)

// stage is one FROM ... AS name block of the Dockerfile.
type stage struct {
	from, name, platform string
	lines                []string // the instructions, continuation lines joined
}

func parseDockerfile(t *testing.T) []stage {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(repo.Root(), "Dockerfile"))
	if err != nil {
		t.Fatal(err)
	}
	var (
		stages []stage
		cur    *stage
		buf    string
	)
	fromRE := regexp.MustCompile(`^FROM\s+(?:--platform=(\S+)\s+)?(\S+)(?:\s+AS\s+(\S+))?$`)
	for _, line := range strings.Split(string(data), "\n") {
		trimmed := strings.TrimSpace(line)
		if trimmed == "" || strings.HasPrefix(trimmed, "#") {
			continue
		}
		if strings.HasSuffix(trimmed, "\\") {
			buf += strings.TrimSuffix(trimmed, "\\") + " "
			continue
		}
		instr := buf + trimmed
		buf = ""
		if m := fromRE.FindStringSubmatch(instr); m != nil {
			stages = append(stages, stage{platform: m[1], from: m[2], name: m[3]})
			cur = &stages[len(stages)-1]
			continue
		}
		if cur != nil {
			cur.lines = append(cur.lines, instr)
		}
	}
	return stages
}

func (s stage) has(prefix string) bool {
	return slices.ContainsFunc(s.lines, func(l string) bool { return strings.HasPrefix(l, prefix) })
}

func (s stage) text() string { return strings.Join(s.lines, "\n") }

// TestDockerfile checks the Dockerfile `make docker-buildx` uses (no engine
// runs here to build it): a builder that runs on the build platform and
// cross-compiles statically for the target, GOARM from the variant for
// 32-bit Raspberry Pi OS, and the two targets on distroless nonroot with
// labels and entrypoints.
func TestDockerfile(t *testing.T) {
	stages := parseDockerfile(t)
	byName := map[string]stage{}
	for _, s := range stages {
		byName[s.name] = s
	}
	builder, ok := byName["builder"]
	if !ok {
		t.Fatalf("no builder stage in %v", stages)
	}
	if builder.platform != "$BUILDPLATFORM" || !strings.HasPrefix(builder.from, "golang:") {
		t.Errorf("builder is FROM --platform=%s %s; want --platform=$BUILDPLATFORM golang:<version>", builder.platform, builder.from)
	}
	for _, arg := range []string{"ARG TARGETOS", "ARG TARGETARCH", "ARG TARGETVARIANT"} {
		if !builder.has(arg) {
			t.Errorf("builder lacks %s", arg)
		}
	}
	body := builder.text()
	for _, want := range []string{"CGO_ENABLED=0", "GOOS=${TARGETOS}", "GOARCH=${TARGETARCH}", "GOARM=${TARGETVARIANT#v}", "./cmd/medops-operator", "./cmd/medops-api"} {
		if !strings.Contains(body, want) {
			t.Errorf("builder does not use %s", want)
		}
	}

	base, ok := byName["base"]
	if !ok || base.from != "gcr.io/distroless/static:nonroot" {
		t.Fatalf("want a base stage FROM gcr.io/distroless/static:nonroot, got %+v", base)
	}
	if !base.has("USER 65532:65532") {
		t.Error("base stage does not run as 65532:65532")
	}
	for _, label := range []string{"org.opencontainers.image.source", "org.opencontainers.image.version", "org.opencontainers.image.revision", "org.opencontainers.image.created"} {
		if !strings.Contains(base.text(), label) {
			t.Errorf("base stage lacks the %s label", label)
		}
	}
	for target, bin := range map[string]string{"operator": "/manager", "api": "/medops-api"} {
		s, ok := byName[target]
		if !ok {
			t.Errorf("no %s target", target)
			continue
		}
		if s.from != "base" {
			t.Errorf("%s target is FROM %s, want base (distroless nonroot)", target, s.from)
		}
		if !s.has("COPY --from=builder /out/"+filepath.Base(bin)+" "+bin) || !s.has(`ENTRYPOINT ["`+bin+`"]`) {
			t.Errorf("%s target does not copy and run %s:\n%s", target, bin, s.text())
		}
	}
	// Run on its own, the api image serves other hosts and writes a data
	// folder the nonroot user owns, like the OCI archives.
	api := byName["api"]
	if want := fmt.Sprintf("ENV %s=%s %s=%s", config.EnvListen, v1alpha1.ContainerListen, config.EnvDataDir, v1alpha1.ContainerDataDir); !api.has(want) {
		t.Errorf("api target lacks %q:\n%s", want, api.text())
	}
	if !strings.Contains(api.text(), "--chown=65532:65532") || !strings.Contains(api.text(), " "+v1alpha1.ContainerDataDir+"/") {
		t.Errorf("api target does not give %s to the nonroot user:\n%s", v1alpha1.ContainerDataDir, api.text())
	}
	// `docker build .` without --target builds the operator, as the manifests expect.
	if last := stages[len(stages)-1]; last.name != "operator" {
		t.Errorf("last stage is %s, want operator", last.name)
	}
}

// TestDockerfileCopiesEveryPackage: each package the programs import from
// this module lies in a folder the builder copies and .dockerignore lets
// through, so a new top-level folder cannot break the image build unseen.
func TestDockerfileCopiesEveryPackage(t *testing.T) {
	var copied []string
	for _, s := range parseDockerfile(t) {
		if s.name != "builder" {
			continue
		}
		for _, l := range s.lines {
			if f := strings.Fields(l); len(f) == 3 && f[0] == "COPY" && strings.HasSuffix(f[1], "/") {
				copied = append(copied, strings.TrimSuffix(f[1], "/"))
			}
		}
	}
	ignore, err := os.ReadFile(filepath.Join(repo.Root(), ".dockerignore"))
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("go", "list", "-deps", "-f", "{{if .Module}}{{if eq .Module.Path \"github.com/medops/medops\"}}{{.ImportPath}}{{end}}{{end}}", "./cmd/medops-operator", "./cmd/medops-api")
	cmd.Dir = repo.Root()
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	for _, pkg := range strings.Fields(string(out)) {
		top := strings.SplitN(strings.TrimPrefix(pkg, "github.com/medops/medops/"), "/", 2)[0]
		if !slices.Contains(copied, top) {
			t.Errorf("%s is imported by the programs but the Dockerfile does not COPY %s/", pkg, top)
		}
		if !strings.Contains(string(ignore), "!"+top+"/") {
			t.Errorf("%s is imported by the programs but .dockerignore does not let %s/ through", pkg, top)
		}
	}
}
