# MedOps: medops-operator and medops-api. `make help` lists the targets.
SHELL := /usr/bin/env bash -o pipefail
.SHELLFLAGS := -ec

IMG_OPERATOR ?= ghcr.io/medops/medops-operator:dev
IMG_API ?= ghcr.io/medops/medops-api:dev
PLATFORMS ?= linux/amd64,linux/arm64,linux/arm/v7
GO_TEST_FLAGS ?= -count=1
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

.PHONY: generate
generate: ## Generate deepcopy code with controller-gen.
	CG=$$($(TOOLS) controller-gen) && $$CG object:headerFile="hack/boilerplate.go.txt" paths="./api/..."

.PHONY: fmt
fmt: ## Run gofmt on the code.
	gofmt -l -w $$(git ls-files '*.go')

.PHONY: vet
vet: ## Run go vet.
	go vet ./...

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
	export KUBEBUILDER_ASSETS="$$($(TOOLS) envtest)" MEDOPS_HELM="$$($(TOOLS) helm)"; \
	go test $(GO_TEST_FLAGS) ./... 2>&1

.PHONY: verify-generated
verify-generated: generate manifests ## Fail when generated files are stale.
	git diff --exit-code -- api config charts || { echo "generated files are stale: run make generate manifests"; exit 1; }

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

.PHONY: e2e
e2e: ## Run the user journey on a local k3s-shaped cluster: kwok Raspberry Pi nodes, helm install, kubectl, nginx.
	hack/e2e/run.sh
