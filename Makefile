# Earshot: call recording for Kubernetes. `make help` lists the targets.
SHELL := /bin/bash
CARGO ?= cargo
CRD := charts/earshot/crds/recordingpolicies.earshot.io.yaml

.PHONY: help demo test test-deps generate fmt lint build e2e bench soak fuzz

help: ## List the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F ':.*## ' '{printf "  %-10s %s\n", $$1, $$2}'

demo: ## Record three real SIP calls through a local recorder and show the report
	@scripts/test-deps.sh
	$(CARGO) build --release -q -p earshot-recorder -p earshot-console -p earshot-tests
	EARSHOT_RECORDER=target/release/earshot-recorder target/release/earshot-demo

test: test-deps ## Install what the tests need, then run every test
	scripts/run-tests.sh

e2e: ## The operator suite against the cluster KUBECONFIG names, else the local control plane and a real node (summary in target/e2e/summary.json)
	@scripts/test-deps.sh
	$(CARGO) build -q -p earshot-recorder -p earshot-operator -p earshot-console
ifdef KUBECONFIG
	$(CARGO) test -p earshot-operator --test cluster -- --nocapture --test-threads=1
else
	EARSHOT_IMAGE_PROFILE=debug scripts/images.sh
	$(CARGO) test -p earshot-operator --test cluster
	$(CARGO) test -p earshot-tests --test node_e2e --test node -- --nocapture
	@cat target/e2e/summary.json
endif

bench: ## Hot-path microbenchmarks, instructions per recorded call-minute (callgrind), the same SIPp load through Earshot and rtpengine, the console over 100 000 recordings
	@scripts/test-deps.sh
	@scripts/bench-deps.sh
	$(CARGO) bench -q -p earshot-recorder-core --bench hot_paths -- --warm-up-time 1 --measurement-time 3
	$(CARGO) bench -q -p earshot-recorder --bench encode -- --warm-up-time 1 --measurement-time 3
	$(CARGO) bench -q -p earshot-recorder --bench codecs -- --warm-up-time 1 --measurement-time 3
	scripts/instructions.sh
	$(CARGO) build --release -q -p earshot-recorder -p earshot-console -p earshot-tests
	EARSHOT_RECORDER=target/release/earshot-recorder target/release/earshot-bench
	target/release/earshot-console-bench

fuzz: ## Each libFuzzer target for FUZZ_SECONDS (default 120); new inputs join the corpus that make test replays
	@scripts/fuzz.sh

soak: ## One recorder for EARSHOT_SOAK_MINUTES (default 60) of the lifetime mix; figures in target/soak.json
	@scripts/test-deps.sh
	$(CARGO) test --release -p earshot-recorder --test lifetime -- --ignored --exact soak --nocapture

test-deps: ## Install the tests' tools (SIPp, ffmpeg); skips what is there
	@scripts/test-deps.sh

generate: ## Regenerate the CRD from the Rust types; copy rules and dashboard into the chart
	$(CARGO) run -q -p earshot-crds --bin crdgen > $(CRD)
	cp config/prometheus/earshot-rules.yaml charts/earshot/files/earshot-rules.yaml
	cp config/grafana/earshot.json charts/earshot/files/earshot-dashboard.json

fmt: ## Format the code
	$(CARGO) fmt --all

lint: ## rustfmt check, clippy with warnings as errors, no large file tracked
	scripts/check-large-files.sh
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

build: ## Build every binary (release)
	$(CARGO) build --release --workspace
