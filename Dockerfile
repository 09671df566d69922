# syntax=docker/dockerfile:1
# Multi-arch images of medops-operator and medops-api, for users with buildx:
#
#   docker buildx build --platform linux/amd64,linux/arm64,linux/arm/v7 --target operator -t IMG .
#   docker buildx build --platform linux/amd64,linux/arm64,linux/arm/v7 --target api -t IMG .
#
# (`make docker-buildx` runs both.) Without a Docker engine, `make images`
# builds the same images as OCI archives with go-containerregistry.
#
# The builder runs on the build machine's own platform and cross-compiles
# (CGO is off), so no emulation is needed even for the arm targets.

ARG GO_VERSION=1.26

FROM --platform=$BUILDPLATFORM golang:${GO_VERSION} AS builder
ARG TARGETOS
ARG TARGETARCH
ARG TARGETVARIANT
ARG VERSION=dev
WORKDIR /workspace
ENV CGO_ENABLED=0 GOTOOLCHAIN=local GOFLAGS=-trimpath
# Dependencies first, so a source change does not download them again.
COPY go.mod go.sum ./
RUN --mount=type=cache,target=/go/pkg/mod go mod download
COPY api/ api/
COPY cmd/ cmd/
COPY internal/ internal/
COPY operator/ operator/
COPY server/ server/
# GOARM comes from the platform variant: linux/arm/v7 -> GOARM=7 (32-bit
# Raspberry Pi OS); it is ignored for other architectures.
RUN --mount=type=cache,target=/go/pkg/mod --mount=type=cache,target=/root/.cache/go-build \
    GOOS=${TARGETOS} GOARCH=${TARGETARCH} GOARM=${TARGETVARIANT#v} \
    go build -ldflags="-s -w" -o /out/manager ./cmd/medops-operator && \
    GOOS=${TARGETOS} GOARCH=${TARGETARCH} GOARM=${TARGETVARIANT#v} \
    go build -ldflags="-s -w" -o /out/medops-api ./cmd/medops-api && \
    mkdir -p /out/medops-data

# Shared by both targets: no shell, no package manager, user 65532.
FROM gcr.io/distroless/static:nonroot AS base
ARG VERSION=dev
ARG REVISION=unknown
ARG CREATED=1970-01-01T00:00:00Z
LABEL org.opencontainers.image.source="https://github.com/medops/medops" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.created="${CREATED}"
USER 65532:65532
WORKDIR /

FROM base AS api
LABEL org.opencontainers.image.title="medops-api" \
      org.opencontainers.image.description="The MedOps REST API: task server and cached gateway"
COPY --from=builder /out/medops-api /medops-api
# medops-api's own defaults (127.0.0.1, a relative data folder) suit a person
# running it by hand; run as a container it must serve other hosts and write
# a folder the nonroot user owns. The OCI archives (make images) set the same.
COPY --from=builder --chown=65532:65532 --chmod=700 /out/medops-data/ /var/lib/medops/
ENV MEDOPS_LISTEN=:8080 MEDOPS_DATA_DIR=/var/lib/medops
EXPOSE 8080
ENTRYPOINT ["/medops-api"]

# The operator comes last, so a plain `docker build .` builds it.
FROM base AS operator
LABEL org.opencontainers.image.title="medops-operator" \
      org.opencontainers.image.description="The MedOps Kubernetes operator"
COPY --from=builder /out/manager /manager
ENTRYPOINT ["/manager"]
