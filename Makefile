# The archiver's commands. The two a new machine needs: `make run` and
# `make test` (README.md). Everything they start lives under .dev/ (ignored
# by git); the tools they build are kept once per machine, in the user's
# cache folder (stack.sh tools-dir).
SHELL := /bin/bash
.DEFAULT_GOAL := help

STACK := deploy/dev/stack.sh
TOOLS := $(shell bash $(STACK) tools-dir)
ENV := set -a && . .dev/env && set +a

# Read from temporal-dev.yaml, the dev server's declaration.
TEMPORAL_CLI_VERSION := $(shell awk '/^cli_version:/ {print $$2}' temporal-dev.yaml)
TEMPORAL_UI := http://$(shell awk '/^ip:/ {print $$2}' temporal-dev.yaml):$(shell awk '/^ui_port:/ {print $$2}' temporal-dev.yaml)

WORKFLOWCHECK_VERSION := v0.6.0
STATICCHECK_VERSION := v0.8.2
WORKFLOWCHECK := $(TOOLS)/workflowcheck-$(WORKFLOWCHECK_VERSION)/workflowcheck
STATICCHECK := $(TOOLS)/staticcheck-$(STATICCHECK_VERSION)/staticcheck

# The slowest packages start first, so that none is left running alone at
# the end. (More packages at once do not help on two cores: make test keeps
# them 87% busy, PostgreSQL and Temporal included.)
GO_TEST_FLAGS ?= -race -count=1 -timeout 15m
MODULE := $(shell go list -m 2>/dev/null)
SLOW_PKGS := internal/torture internal/e2e activities internal/realdb internal/faults
TEST_PKGS = $(addprefix ./,$(SLOW_PKGS)) $(filter-out $(addprefix $(MODULE)/,$(SLOW_PKGS)),$(shell go list ./...))

.PHONY: help build dev-up dev-down dev-clean run test test-bin test-image test-faults test-unit lint record-histories fuzz debs bench torture

FUZZTIME ?= 30s

help:
	@echo "make run        dev stack up, migrate, demo data, one archive run, summary (Web UI: $(TEMPORAL_UI))"
	@echo "make test       dev stack up, then every test against the real PostgreSQL, Temporal and S3"
	@echo "make test-image the Dockerfile's build, run as written: static binaries that start (CI runs it)"
	@echo "make test-unit  the tests that need no dev stack"
	@echo "make lint       gofmt, go vet, staticcheck, workflowcheck"
	@echo "make dev-up | dev-down | dev-clean    the local stack (state in .dev/)"
	@echo "make record-histories   record new histories for the replay tests (existing files are kept)"
	@echo "make fuzz       fuzz the parsers of user input (FUZZTIME=30s each)"
	@echo "make torture    SEEDS random torture scenarios from START (SEED=n replays one), against an oracle"

build:
	go build -o bin/ ./worker ./starter

dev-up:
	@bash $(STACK) up

dev-down:
	@bash $(STACK) down

dev-clean:
	@bash $(STACK) clean

# The build of worker and starter overlaps the stack's first start (its
# tools download and compile meanwhile).
run:
	@$(MAKE) --no-print-directory -j2 build dev-up
	@bash deploy/dev/run.sh

# The stack's first start (tool builds), the Debian installs and the
# build of the binaries the tests start overlap. The tests use these
# binaries (internal/testenv: Binary, WorkerBinary) instead of each test
# process building its own.
TEST_BIN := .cache/testbin
test:
	@$(MAKE) --no-print-directory -j3 dev-up debs test-bin
	$(ENV) && ARCHIVER_REQUIRE_STACK=1 ARCHIVER_TEST_BIN_DIR=$(abspath $(TEST_BIN)) ARCHIVER_TEST_WORKER_BIN=$(abspath $(TEST_BIN))/faults/worker \
	  go test -tags faults $(GO_TEST_FLAGS) $(TEST_PKGS)

# worker and starter as `make build` builds them, and the worker with the
# failpoints the fault and torture tests kill it at.
test-bin:
	go build -o $(TEST_BIN)/ ./worker ./starter
	go build -tags faults -o $(TEST_BIN)/faults/ ./worker

# The Dockerfile's go build, run with its flags (deploy/k8s): a second
# compile of the whole module, so not part of `make test`; .ci/run runs it.
test-image:
	ARCHIVER_IMAGE_TEST=1 go test -count=1 -run '^(TestDockerBuildStatic|TestManifestStarterCommands)$$' -v ./deploy/k8s 2>&1 | grep -E '^(=== RUN|--- |\s+\S+_test.go|ok|FAIL|PASS)'; exit $${PIPESTATUS[0]}

# The long fault tests: 450k rows with three kills and a PostgreSQL restart,
# a Temporal restart, an S3 outage, live load (see internal/faults).
test-faults: dev-up
	$(ENV) && ARCHIVER_REQUIRE_STACK=1 FAULTS_LONG=1 go test -tags faults -count=1 -timeout 30m -v ./internal/faults 2>&1 | grep -E '^(=== RUN|--- |\s+\S+_test.go|ok|FAIL|PASS)'; exit $${PIPESTATUS[0]}

# A torture campaign (internal/torture): SEEDS random scenarios from START
# (the clock when unset), or SEED=n to replay one; STOP=1 ends it at the
# first failing seed. Besides killing the worker it restarts PostgreSQL and
# stops S3 at random: run it alone. A failure is shrunk (TORTURE_FLAGS) and
# printed with its seed, schema, policy and operations.
SEEDS ?= 50
TORTURE_FLAGS ?= -rapid.shrinktime=3m
torture: dev-up
	$(ENV) && ARCHIVER_REQUIRE_STACK=1 TORTURE_SEEDS=$(SEEDS) TORTURE_START=$(START) TORTURE_SEED=$(SEED) TORTURE_STOP=$(STOP) TORTURE_SERVER_FAULTS=1 \
	  go test -count=1 -timeout 0 -run '^TestTorture$$' -v ./internal/torture $(TORTURE_FLAGS)

test-unit:
	go test -count=1 ./internal/config ./internal/policy ./starter ./workflows

# Explore the parsers of user input beyond their seed corpus (which every
# `go test` runs).
fuzz:
	go test ./starter -run '^$$' -fuzz '^FuzzParseAsOf$$' -fuzztime $(FUZZTIME)
	go test ./starter -run '^$$' -fuzz '^FuzzRunFlags$$' -fuzztime $(FUZZTIME)
	go test ./starter -run '^$$' -fuzz '^FuzzParseTime$$' -fuzztime $(FUZZTIME)
	go test ./workflows -run '^$$' -fuzz '^FuzzValidateBackfill$$' -fuzztime $(FUZZTIME)
	go test ./internal/policy -run '^$$' -fuzz '^FuzzOverride$$' -fuzztime $(FUZZTIME)
	go test ./internal/config -run '^$$' -fuzz '^FuzzLoadFrom$$' -fuzztime $(FUZZTIME)
	go test ./activities -run '^$$' -fuzz '^FuzzResolveReportPath$$' -fuzztime $(FUZZTIME)

record-histories: dev-up
	$(ENV) && ARCHIVER_REQUIRE_STACK=1 ARCHIVER_RECORD_HISTORY=1 go test -count=1 -run "TestLogsRun|TestAllTables|TestPauseReachesLocalBatches" ./internal/e2e

# The test tools from Debian's packages, installed in one apt-get when
# missing (as root; otherwise it says what to run):
#   promtool  checks the alert rules (package prometheus);
#   chromium  drives the Web UI in TestWebUIShowsTheRun (starter/webui_test.go).
DEBS := promtool:prometheus chromium:chromium
debs:
	@missing=; for d in $(DEBS); do command -v $${d%%:*} >/dev/null || missing="$$missing $${d#*:}"; done; \
	[ -z "$$missing" ] && exit 0; \
	if [ "$$(id -u)" != 0 ]; then echo "missing test tools: sudo apt-get install$$missing"; exit 1; fi; \
	echo "installing Debian packages:$$missing"; \
	(apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing) >/dev/null

$(WORKFLOWCHECK):
	GOBIN=$(abspath $(dir $@)) go install go.temporal.io/sdk/contrib/tools/workflowcheck@$(WORKFLOWCHECK_VERSION)

$(STATICCHECK):
	GOBIN=$(abspath $(dir $@)) go install honnef.co/go/tools/cmd/staticcheck@$(STATICCHECK_VERSION)

lint:
	@$(MAKE) --no-print-directory -j2 $(WORKFLOWCHECK) $(STATICCHECK)
	@out=$$(gofmt -l .); if [ -n "$$out" ]; then echo "gofmt would change:"; echo "$$out"; exit 1; fi
	go vet ./...
	$(STATICCHECK) ./...
	$(WORKFLOWCHECK) ./...

# Speed against the raw SQL bound on identical data (internal/bench):
# BENCH {json} lines. BENCH_FLAGS=--quick for the under-a-minute sizes,
# BENCH_FLAGS=--nightly for the whole nightly volume in one run,
# BENCH_FLAGS=--scale for the logs cost curve at 1M, 5M and 20M rows.
bench: dev-up
	$(ENV) && go run ./internal/bench $(BENCH_FLAGS)
