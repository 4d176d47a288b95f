# verifyq — `make` or `make help` lists the targets.
#
# Every target that the lead adds needs a `## description` after its colon to
# show up in `make help`.

SHELL := /bin/bash
.DEFAULT_GOAL := help

GO      ?= go
BIN     := bin
MAILPIT := $(BIN)/mailpit
GHZ     := $(BIN)/ghz
VEGETA  := $(BIN)/vegeta
BENCHSTAT := $(BIN)/benchstat
LINTER  := $(BIN)/golangci-lint
HELM    := $(BIN)/helm
BUF     := $(BIN)/buf
JAEGER  := $(BIN)/jaeger
# dockerfile-utils (pinned in tools/npm/package-lock.json) checks the Dockerfile.
DOCKERFILE_UTILS := tools/npm/node_modules/.bin/dockerfile-utils
PROTOS  := proto/message/message.proto proto/verifyq/v1/verifyq.proto

.PHONY: help build run smoke test test-faults test-modes test-mta test-traces test-browser screenshots fuzz lint tools proto proto-check clean bench

# A count of inputs, not a duration: with a duration, Go's fuzzing
# coordinator (go1.26) can report its own stop as "context deadline
# exceeded" and fail a target that found nothing (go.dev/issue/75804).
FUZZTIME ?= 100000x

help: ## list the targets
	@echo 'usage: make <target>'
	@echo
	@grep -hE '^[a-zA-Z0-9_.-]+:.*## ' $(MAKEFILE_LIST) | \
		awk 'BEGIN {FS = ":.*## "}; {printf "  %-14s %s\n", $$1, $$2}'

build: ## build bin/enqueuer and bin/worker
	$(GO) build -o $(BIN)/ ./cmd/...

run: ## run Redis (yours or a local one), mailpit, worker and enqueuer; Ctrl-C stops all
	bash scripts/run.sh

smoke: ## run the stack, request a code, check its mail reached mailpit, stop
	bash scripts/smoke.sh

test: ## go vet and every test but the slow fault tests (-short), with the race detector
	$(GO) vet ./...
	$(GO) test -short -race -count=1 ./...

# The tests that -short skips: each is named TestFault... and skips itself
# only under -short (e2e/slowfaults_test.go), so this target runs them all.
test-faults: ## the slow fault tests: a Redis restart, SMTP down 30 s, a 451 burst, worker SIGKILL, a webhook receiver down 1 min, a Sentinel primary killed under load, with the figures
	$(GO) test -race -count=1 -timeout 30m -v -run '^TestFault' ./e2e

# The suites that take a Redis deployment of VERIFYQ_TEST_REDIS_MODE's mode.
MODE_PKGS := ./codes ./limits ./delivery ./tasks ./service ./reconcile ./httpapi ./grpcapi ./e2e

test-modes: ## the Redis suites again on a Sentinel set and on a 3-master Redis Cluster (make test is single mode)
	set -e; for mode in sentinel cluster; do \
		echo "==> VERIFYQ_TEST_REDIS_MODE=$$mode"; \
		VERIFYQ_TEST_REDIS_MODE=$$mode $(GO) test -race -short -count=1 $(MODE_PKGS); \
	done

# The tests tagged mta start real Postfix instances (internal/mtatest), as
# root; scripts/install-mta.sh installs Postfix, Cyrus SASL and SpamAssassin
# from Debian's packages first (quick when they are present). -p 1: one
# package at a time, since each test starts its own Postfix.
# Every test under the mta build tag is named TestMTA...; the others run in
# make test already.
test-mta: ## install Postfix, Cyrus SASL and SpamAssassin (apt-get), then the TestMTA tests (mta tag): a real Postfix per test (root)
	bash scripts/install-mta.sh
	$(GO) test -tags mta -count=1 -p 1 -run '^TestMTA' ./...

# The tests tagged traces start Jaeger (bin/jaeger, pinned in its own
# module, tools/jaeger) with in-memory storage and both binaries exporting
# to it, and read the traces back from its query API; every one is named
# TestTraces....
test-traces: $(JAEGER) ## the TestTraces tests (traces tag): both binaries export to a real Jaeger, the traces read back; and none without OTEL_*
	JAEGER_BIN=$(CURDIR)/$(JAEGER) $(GO) test -tags traces -count=1 -v -run '^TestTraces' ./e2e

test-browser: $(MAILPIT) ## headless Chromium: the dashboard and the mailpit inbox, screenshots in tmp-screenshots/ (ignored)
	$(GO) test -tags browser -count=1 -v -run TestBrowser ./e2e

screenshots: $(MAILPIT) ## test-browser, refreshing the committed screenshots in docs/screenshots/ (commit them)
	REFRESH_SCREENSHOTS=1 $(GO) test -tags browser -count=1 -v -run TestBrowser ./e2e

fuzz: ## run every fuzz target for FUZZTIME (100000 inputs, some seconds) each, seed corpora in testdata/fuzz
	$(GO) test -run '^$$' -fuzz '^FuzzRequestDecoding$$' -fuzztime $(FUZZTIME) ./httpapi
	$(GO) test -run '^$$' -fuzz '^FuzzValidateAddress$$' -fuzztime $(FUZZTIME) ./mail
	$(GO) test -run '^$$' -fuzz '^FuzzRead$$' -fuzztime $(FUZZTIME) ./bounce/report
	$(GO) test -run '^$$' -fuzz '^FuzzIsPlainAddress$$' -fuzztime $(FUZZTIME) ./mail

# BASELINE: a git ref built in a temporary worktree and measured in ROUNDS
# rounds alternating with the tree's build; PROFILE: a directory for CPU
# and heap profiles, Redis commandstats and slow logs of the tree's runs.
ROUNDS ?= 3

bench: $(GHZ) $(VEGETA) ## both binaries under ghz and vegeta on their own Redis and SMTP sink, into BENCHMARKS.md (~5 min); BASELINE=<ref> [ROUNDS=3] adds ratios to that ref's build and the floor (~4 min a round), PROFILE=<dir> saves profiles
	$(GO) run ./cmd/bench -ghz $(GHZ) -vegeta $(VEGETA) -out BENCHMARKS.md -work tmp-bench \
		$(if $(BASELINE),-baseline $(BASELINE) -rounds $(ROUNDS)) $(if $(PROFILE),-profile $(PROFILE))

# buf breaking compares the protos with the commit that first committed them
# (edf55a2): the old gateway's message.proto may never change on the wire, and
# verifyq.v1 only grows. A clone needs that commit (git clone has it; a
# shallow clone does not).
BUF_AGAINST := .git\#ref=edf55a2ded2390b02c59fb883f191d9d29af3ab8,subdir=proto
HELM_EXAMPLES := $(wildcard deploy/helm/examples/*.yaml)

lint: $(LINTER) $(BUF) $(HELM) $(DOCKERFILE_UTILS) ## golangci-lint (gofmt included), buf lint and breaking, helm lint and template of each values example, the Dockerfile and docker-compose.yml checked
	$(LINTER) run ./...
	$(BUF) lint
	$(BUF) breaking --against '$(BUF_AGAINST)'
	$(DOCKERFILE_UTILS) lint Dockerfile
	@command -v docker-compose >/dev/null || { echo 'docker-compose is missing: apt-get install docker-compose (.ci/run does)' >&2; exit 1; }
	docker-compose -f docker-compose.yml config --quiet
	set -e; for f in $(HELM_EXAMPLES); do \
		echo "==> helm lint and template with $$f"; \
		$(HELM) lint --strict --quiet deploy/helm/verifyq -f $$f; \
		$(HELM) template verifyq deploy/helm/verifyq -f $$f >/dev/null; \
	done

# Rebuilt only when tools/go.mod or tools/go.sum (the pin) changes.
$(LINTER): tools/go.mod tools/go.sum
	$(GO) build -C tools -o $(CURDIR)/$@ github.com/golangci/golangci-lint/v2/cmd/golangci-lint

$(HELM): tools/go.mod tools/go.sum
	$(GO) build -C tools -o $(CURDIR)/$@ helm.sh/helm/v4/cmd/helm

$(BUF): tools/go.mod tools/go.sum
	$(GO) build -C tools -o $(CURDIR)/$@ github.com/bufbuild/buf/cmd/buf

# Jaeger has a module of its own: its otelzap bridge does not build beside
# the otel log API that the tools of tools/go.mod resolve. Rebuilt only when
# its pin changes.
$(JAEGER): tools/jaeger/go.mod tools/jaeger/go.sum
	$(GO) build -C tools/jaeger -o $(CURDIR)/$@ github.com/jaegertracing/jaeger/cmd/jaeger

$(DOCKERFILE_UTILS): tools/npm/package.json tools/npm/package-lock.json
	npm ci --prefix tools/npm --no-audit --no-fund
	touch $@

tools: $(MAILPIT) $(GHZ) $(VEGETA) $(BENCHSTAT) ## build bin/mailpit (dev mail catcher), bin/ghz and bin/vegeta (load generators) and bin/benchstat, pinned in tools/go.mod

$(MAILPIT): tools/go.mod tools/go.sum tools/build-mailpit.sh
	bash tools/build-mailpit.sh $@

$(GHZ) $(VEGETA) &: tools/go.mod tools/go.sum
	$(GO) build -C tools -o $(CURDIR)/$(BIN)/ github.com/bojand/ghz/cmd/ghz github.com/tsenart/vegeta/v12

$(BENCHSTAT): tools/go.mod tools/go.sum
	$(GO) build -C tools -o $(CURDIR)/$@ golang.org/x/perf/cmd/benchstat

proto: ## regenerate proto/ Go code (protoc from Debian's protobuf-compiler, plugins pinned in tools/go.mod)
	$(GO) build -C tools -o $(CURDIR)/$(BIN)/ google.golang.org/protobuf/cmd/protoc-gen-go google.golang.org/grpc/cmd/protoc-gen-go-grpc
	protoc -I proto \
		--plugin=protoc-gen-go=$(BIN)/protoc-gen-go \
		--plugin=protoc-gen-go-grpc=$(BIN)/protoc-gen-go-grpc \
		--go_out=proto --go_opt=paths=source_relative \
		--go-grpc_out=proto --go-grpc_opt=paths=source_relative \
		$(PROTOS)

proto-check: proto ## fail when the committed generated code is stale
	@git diff --exit-code -- proto || { echo 'proto/: generated code is stale: run make proto and commit' >&2; exit 1; }
	@test -z "$$(git status --porcelain -- proto)" || { git status --porcelain -- proto >&2; echo 'proto/: uncommitted generated files: run make proto and commit' >&2; exit 1; }

clean: ## remove bin/ (binaries, mailpit and its npm build copy), tools/npm/node_modules, tmp-run/, tmp-bench/, tmp-screenshots/ and coverage files
	rm -rf $(BIN) tools/npm/node_modules tmp-run tmp-bench tmp-screenshots
	rm -f coverage.* *.coverprofile
