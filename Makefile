# MedOps: medops-operator and medops-api. `make help` lists the targets.
SHELL := /usr/bin/env bash -o pipefail
.SHELLFLAGS := -ec

IMG_OPERATOR ?= ghcr.io/medops/medops-operator:dev
IMG_API ?= ghcr.io/medops/medops-api:dev
PLATFORMS ?= linux/amd64,linux/arm64,linux/arm/v7
GO_TEST_FLAGS ?= -count=1 -timeout 30m
TOOLS := hack/tools.sh

.PHONY: all
all: build

##@ General

.PHONY: help
help: ## Show this help.
	@awk 'BEGIN {FS = ":.*##"; printf "Usage: make <target>\n"} /^[a-zA-Z_0-9-]+:.*?##/ { printf "  \033[36m%-18s\033[0m %s\n", $$1, $$2 } /^##@/ { printf "\n\033[1m%s\033[0m\n", substr($$0, 5) }' $(MAKEFILE_LIST)

##@ Development

.PHONY: manifests
manifests: ## Generate the CRD and RBAC manifests with controller-gen.
	CG=$$($(TOOLS) controller-gen) && $$CG rbac:roleName=manager-role crd:allowDangerousTypes=false paths="./api/...;./operator/..." output:crd:artifacts:config=config/crd/bases output:rbac:artifacts:config=config/rbac
	@# The chart installs the same CRDs and operator rules (a test checks the copies).
	rm -f charts/medops-operator/files/crds/*.yaml
	cp config/crd/bases/*.yaml charts/medops-operator/files/crds/
	cp config/rbac/role.yaml charts/medops-operator/files/rbac/role.yaml

.PHONY: generate
generate: ## Generate deepcopy code with controller-gen.
	CG=$$($(TOOLS) controller-gen) && $$CG object:headerFile="hack/boilerplate.go.txt" paths="./api/..."

.PHONY: fmt
fmt: ## Run gofmt on the code.
	gofmt -l -w $$(git ls-files '*.go')

.PHONY: vet
vet: ## Run go vet.
	go vet ./...

.PHONY: install-postgres
install-postgres: ## Install PostgreSQL 15 from Debian (the postgres store's tests skip without it; CI installs it).
	hack/install-postgres.sh

.PHONY: envtest
envtest: ## Build (once) and print the folder to use as KUBEBUILDER_ASSETS.
	@$(TOOLS) envtest

.PHONY: kubectl
kubectl: ## Build (once) the pinned kubectl and print its path.
	@$(TOOLS) kubectl

.PHONY: helm
helm: ## Build (once) the pinned helm and print its path.
	@$(TOOLS) helm

.PHONY: controller-gen
controller-gen: ## Build (once) the pinned controller-gen and print its path.
	@$(TOOLS) controller-gen

.PHONY: test
test: ## Run every test: unit, golden files and envtest against a real kube-apiserver and etcd.
	export KUBEBUILDER_ASSETS="$$($(TOOLS) envtest)" MEDOPS_HELM="$$($(TOOLS) helm)" MEDOPS_KUBECTL="$$($(TOOLS) kubectl)" \
	  MEDOPS_GOFAKES3="$$($(TOOLS) gofakes3)"; \
	go test $(GO_TEST_FLAGS) ./... 2>&1

.PHONY: test-browser
test-browser: ## Drive Debian's chromium (apt-get install chromium) through /docs on a real medops-api: list routes, authorize, create a task.
	hack/browser/run.sh

.PHONY: verify-generated
verify-generated: generate manifests ## Fail when generated files are stale.
	git diff --exit-code -- api config charts || { echo "generated files are stale: run make generate manifests"; exit 1; }
	@# New generated files (e.g. a new CRD) that were never committed are stale too.
	test -z "$$(git status --porcelain --untracked-files=all -- api config charts)" || { git status --short -- api config charts; echo "generated files are not committed"; exit 1; }

##@ Build

.PHONY: build
build: ## Build medops-operator and medops-api into bin/.
	CGO_ENABLED=0 go build -trimpath -o bin/ ./cmd/medops-operator ./cmd/medops-api

.PHONY: run
run: ## Run the operator against the cluster of the current kubeconfig.
	go run ./cmd/medops-operator

.PHONY: run-api
run-api: ## Run medops-api on 127.0.0.1:8080 with its embedded store and cache.
	go run ./cmd/medops-api --listen 127.0.0.1:8080 --data-dir .medops-data

##@ End to end

# E2E_FLAGS: e.g. -e2e.work DIR (keep configs and logs there), -e2e.wait 5m.
E2E_FLAGS ?=

.PHONY: e2e
e2e: ## Run the user journey (needs root): a real amd64 node and a real arm64 node (qemu) run our images as pods behind Traefik, helm, kubectl, nginx. Undoes a killed run's leftovers first.
	@tmp=$$(mktemp -d "$${TMPDIR:-/tmp}/medops-e2e-bin.XXXXXX"); \
	trap 'rm -rf "$$tmp"' EXIT; \
	go test -c -tags e2e -o "$$tmp/journey.test" ./hack/e2e/journey; \
	"$$tmp/journey.test" -test.run '^TestJourney$$' -e2e.cleanup $(E2E_FLAGS) || exit $$?; \
	rc=0; "$$tmp/journey.test" -test.run '^TestJourney$$' -test.v -test.timeout 0 $(E2E_FLAGS) 2>&1 | tee -i "$$tmp/e2e.log" || rc=$$?; \
	grep -E '^e2e: [0-9]+ passed, [0-9]+ failed$$' "$$tmp/e2e.log" | tail -1; \
	exit $$rc

##@ Deployment

VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
REVISION ?= $(shell git rev-parse HEAD 2>/dev/null || echo unknown)
# Image times come from the last commit, so a rebuild of the same commit gives the same digests.
SOURCE_DATE_EPOCH ?= $(shell git log -1 --format=%ct 2>/dev/null || echo 0)
CHART := charts/medops-operator

.PHONY: build-installer
build-installer: manifests ## Write dist/install.yaml (CRD, RBAC, operator) from config/default with IMG_OPERATOR, built in process with kustomize/api.
	go run ./hack/kustomize -image ghcr.io/medops/medops-operator=$(IMG_OPERATOR) -o dist/install.yaml config/default

.PHONY: images
images: ## Build dist/medops-operator.oci.tar and dist/medops-api.oci.tar: multi-arch OCI archives for PLATFORMS, no Docker needed.
	SOURCE_DATE_EPOCH=$(SOURCE_DATE_EPOCH) go run ./hack/imagebuild -out dist -platforms $(PLATFORMS) \
	  -operator-image $(IMG_OPERATOR) -api-image $(IMG_API) -version $(VERSION) -revision $(REVISION)

.PHONY: test-images-qemu
test-images-qemu: ## Run the arm64 medops-api image with its own config (entrypoint, env, user) under qemu-aarch64-static (apt-get install qemu-user-static; needs root) and probe it.
	MEDOPS_QEMU=1 go test -count=1 -run 'TestQEMUHealthz' -v ./internal/ociimage

.PHONY: docker-buildx
docker-buildx: ## Build and push both images for PLATFORMS with docker buildx (needs a Docker engine).
	docker buildx inspect medops-builder >/dev/null 2>&1 || docker buildx create --name medops-builder
	for target in operator api; do \
	  img=$(IMG_OPERATOR); [ $$target = api ] && img=$(IMG_API); \
	  docker buildx build --builder medops-builder --push --platform $(PLATFORMS) --target $$target \
	    --build-arg VERSION=$(VERSION) --build-arg REVISION=$(REVISION) \
	    --build-arg CREATED=$$(date -u -d @$(SOURCE_DATE_EPOCH) +%Y-%m-%dT%H:%M:%SZ) \
	    -t $$img . ; \
	done

.PHONY: helm-lint
helm-lint: ## Lint the Helm chart with its defaults and each ci/ values file.
	H=$$($(TOOLS) helm) && $$H lint --strict $(CHART) && \
	for f in $(CHART)/ci/*-values.yaml; do $$H lint --strict $(CHART) -f $$f; done

.PHONY: helm-package
helm-package: manifests ## Package the chart into dist/.
	H=$$($(TOOLS) helm) && $$H package $(CHART) -d dist

##@ Benchmarks

BENCH_API_FLAGS ?=
BENCH_OPERATOR_FLAGS ?=

.PHONY: bench-api
bench-api: ## Load medops-api on loopback with wrk next to nginx; prints req/s, p50/p99, RSS (docs/benchmarks.md).
	hack/bench/install-tools.sh
	go run ./hack/bench/api $(BENCH_API_FLAGS)

.PHONY: bench-operator
bench-operator: ## Run the operator against 1,000 MedOpsAPIs on envtest; prints convergence and its ratio to the apiserver floor, writes, reconcile p50/p99, RSS.
	export KUBEBUILDER_ASSETS="$$($(TOOLS) envtest)"; \
	go run ./hack/bench/operator $(BENCH_OPERATOR_FLAGS)

.PHONY: bench-operator-5000
bench-operator-5000: ## bench-operator with 5,000 MedOpsAPIs (memory per MedOpsAPI at scale).
	$(MAKE) bench-operator BENCH_OPERATOR_FLAGS="-medopsapis=5000 -timeout=30m $(BENCH_OPERATOR_FLAGS)"

.PHONY: bench-api-smoke
bench-api-smoke: ## Check that bench-api still runs (one 1s round, few tasks); says nothing about speed.
	hack/bench/install-tools.sh
	go run ./hack/bench/api -smoke

.PHONY: bench-operator-smoke
bench-operator-smoke: ## Check that bench-operator still runs (20 MedOpsAPIs); says nothing about speed.
	export KUBEBUILDER_ASSETS="$$($(TOOLS) envtest)"; \
	go run ./hack/bench/operator -smoke
