# syntax=docker/dockerfile:1
#
# The archiver's image: the worker (the ENTRYPOINT) and the starter (the
# operator's CLI; the migrate Job and the codec server run it with
# `command: ["/usr/local/bin/starter"]`). Both binaries are static
# (CGO_ENABLED=0, the time zone database embedded), the final stage is
# distroless: no shell, no package manager, runs as uid 65532.
#
#   docker build -t REGISTRY/archiver:TAG --build-arg VERSION=TAG .
#
# VERSION is also the worker's build id under Worker Versioning (linked in
# as main.buildID; docs/deploying.md): give every build its
# own (the tag, or the commit). Without it a worker with
# ARCHIVE_WORKER_DEPLOYMENT set refuses to start unless
# ARCHIVE_WORKER_BUILD_ID names one.
#
# deploy/k8s/dockerfile_test.go checks this file (stages, flags, user,
# entrypoint) and runs the build command below with the same flags.

ARG GO_VERSION=1.26.8

FROM --platform=$BUILDPLATFORM golang:${GO_VERSION} AS build
ARG TARGETOS
ARG TARGETARCH
ARG VERSION
WORKDIR /src
COPY go.mod go.sum ./
RUN --mount=type=cache,target=/go/pkg/mod go mod download
COPY . .
RUN --mount=type=cache,target=/go/pkg/mod --mount=type=cache,target=/root/.cache/go-build \
    CGO_ENABLED=0 GOOS=$TARGETOS GOARCH=$TARGETARCH go build -trimpath -tags timetzdata -ldflags="-s -w -X main.buildID=${VERSION}" -o /out/ ./worker ./starter

FROM gcr.io/distroless/static-debian12:nonroot
ARG VERSION=dev
LABEL org.opencontainers.image.title="archiver" \
      org.opencontainers.image.source="https://github.com/mockupaws/archiver" \
      org.opencontainers.image.version="${VERSION}"
COPY --from=build /out/worker /out/starter /usr/local/bin/
USER 65532:65532
# The worker's metrics listener (METRICS_ADDR=:9464 in deploy/k8s): /metrics,
# /healthz, /readyz.
EXPOSE 9464
ENTRYPOINT ["/usr/local/bin/worker"]
