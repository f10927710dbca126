# One entry point for every check; CI (.ci/run) calls the same targets.
GO       ?= go
FUZZTIME ?= 10s

.PHONY: build run test lint race fuzz bench bench-smoke bench-suite

# The version `wspubsub version` prints and /metrics' build_info carries,
# stamped from git. Without git, a repository or tags it is still set
# cleanly: --always falls back to the commit, and an empty VERSION leaves the
# binary unstamped (it then reports what the Go toolchain recorded, or
# "(devel)"). Override with `make build VERSION=v1.2.3`.
GIT     ?= git
VERSION ?= $(shell $(GIT) describe --tags --always --dirty 2>/dev/null)
LDFLAGS := -X github.com/wspubsub/wspubsub/version.stamped=$(VERSION)
# Where build puts the binaries.
BINDIR  ?= .

build:
	$(GO) build -ldflags '$(LDFLAGS)' -o $(BINDIR)/wspubsub ./cmd/wspubsub
	$(GO) build -ldflags '$(LDFLAGS)' -o $(BINDIR)/wspubsub-bench ./cmd/wspubsub-bench

# Run the hub on the embedded key file (no database needed).
run:
	$(GO) run -ldflags '$(LDFLAGS)' ./cmd/wspubsub serve

# The test command: lint, every test under the race detector, short fuzzing,
# and a smoke run of the load-testing suite against the hub and the reference.
test: lint race fuzz bench-smoke

# The patched nbio (third_party/nbio) is a module of its own, outside ./...,
# and its kqueue poller (macOS, BSD) builds only there: lint vets it for each
# poller.
lint:
	@out=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	  if [ -n "$$out" ]; then echo "gofmt would change:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...
	$(GO) vet github.com/lesismal/nbio
	GOOS=darwin GOARCH=arm64 $(GO) vet github.com/lesismal/nbio ./loop/
	GOOS=freebsd GOARCH=amd64 $(GO) vet github.com/lesismal/nbio ./loop/

race:
	$(GO) test -race -count=1 -timeout 20m ./...

# Each fuzz target for a bounded time (FUZZTIME each); scripts/fuzz-one
# retries a run that Go 1.26's fuzzing coordinator fails at the deadline
# with no finding (golang/go#75804).
fuzz:
	./scripts/fuzz-one $(GO) ./ws/ FuzzReader $(FUZZTIME)
	./scripts/fuzz-one $(GO) ./ws/ FuzzParseRequest $(FUZZTIME)
	./scripts/fuzz-one $(GO) ./ws/ FuzzAcceptDeflate $(FUZZTIME)
	./scripts/fuzz-one $(GO) ./ws/ FuzzInflate $(FUZZTIME)
	./scripts/fuzz-one $(GO) ./server/ FuzzParseTarget $(FUZZTIME)
	./scripts/fuzz-one $(GO) ./server/ FuzzParseResume $(FUZZTIME)
	./scripts/fuzz-one $(GO) ./server/ FuzzAcceptsEventStream $(FUZZTIME)
	./scripts/fuzz-one $(GO) ./server/ FuzzAPIRequest $(FUZZTIME)
	./scripts/fuzz-one $(GO) ./server/ FuzzForwardedFor $(FUZZTIME)
	./scripts/fuzz-one $(GO) ./server/ FuzzVerifyToken $(FUZZTIME)
	./scripts/fuzz-one $(GO) ./keys/ FuzzWellFormed $(FUZZTIME)
	./scripts/fuzz-one $(GO) ./cmd/wspubsub/ FuzzParseConfig $(FUZZTIME)
	./scripts/fuzz-one $(GO) ./cluster/ FuzzNames $(FUZZTIME)
	./scripts/fuzz-one $(GO) ./cluster/ FuzzParseHeader $(FUZZTIME)
	./scripts/fuzz-one $(GO) ./cluster/ FuzzParseHistory $(FUZZTIME)
	./scripts/fuzz-one $(GO) ./cluster/ FuzzParseForward $(FUZZTIME)
	./scripts/fuzz-one $(GO) ./cluster/ FuzzParseRelay $(FUZZTIME)
	./scripts/fuzz-one $(GO) ./cluster/ FuzzRedactURL $(FUZZTIME)
	./scripts/fuzz-one $(GO) ./bench/meta/ FuzzParse $(FUZZTIME)
	./scripts/fuzz-one $(GO) ./proxyproto/ FuzzParse $(FUZZTIME)

# Benchmarks next to the code (fan-out allocations, parser, topic table).
bench:
	$(GO) test -run '^$$' -bench . -benchtime 2s ./ws/ ./topics/ ./keys/filestore/ ./keys/pgstore/ ./loop/ ./server/

# Seconds: tiny idle, fanout, paced, churn, reconnect and storm (1,000
# subscribers dropped at once and back at once) runs against both hubs; a
# compressed (permessage-deflate) fanout, a short soak and slow consumer
# against ours; small topics beside a large one (neighbor) against both;
# then a cluster of 3 nodes over a throwaway NATS (nats-server built from
# the module graph) with 3,000 subscribers, node 2 killed with SIGKILL
# mid-run, its subscribers resumed on the others with since.
bench-smoke: build
	./wspubsub-bench smoke --hub-bin ./wspubsub
	./wspubsub-bench neighbor --hub-bin ./wspubsub --compare --small-topics 10 --big-subs 1100 --phase 1s
	$(GO) build -o $(BINDIR)/nats-server github.com/nats-io/nats-server/v2
	./wspubsub-bench reconnect --hub-bin ./wspubsub --nodes 3 --nats-bin ./nats-server \
	  --topics 150 --subs 20 --count 20 --rate 4 --cuts 0 --kill-node 2 --procs 2

# Minutes: the target scenarios of BENCHMARKS.md, each against ours and the
# reference in one run.
bench-suite: build
	./wspubsub-bench idle   --compare --hub-bin ./wspubsub --subs 19000 --procs 2
	./wspubsub-bench fanout --compare --hub-bin ./wspubsub --topics 1 --subs 10000 --count 200 --size 128 --procs 2
	./wspubsub-bench fanout --compare --hub-bin ./wspubsub --topics 1000 --subs 10 --count 200 --size 256 --procs 2
	./wspubsub-bench fanout --compare --hub-bin ./wspubsub --topics 1 --subs 10000 --count 120 --rate 4 --procs 2
	./wspubsub-bench churn  --compare --hub-bin ./wspubsub --topics 10 --subs 200 --rate 100 --duration 10s --churn-rate 300 --churn-life 1s --procs 2
	./wspubsub-bench reconnect --compare --hub-bin ./wspubsub --subs 10000 --rate 4 --duration 20s --procs 2 --cuts 2
	./wspubsub-bench reconnect --compare --hub-bin ./wspubsub --subs 10000 --rate 4 --duration 20s --procs 2 --cuts 2 --cut hub
	./wspubsub-bench storm  --compare --hub-bin ./wspubsub --subs 19000
	./wspubsub-bench slowconsumer --hub-bin ./wspubsub
	./wspubsub-bench soak --hub-bin ./wspubsub
