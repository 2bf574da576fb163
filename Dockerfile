# syntax=docker/dockerfile:1
# The weir agent image, built from the repository root:
#   docker build -t ghcr.io/weir-dev/weir:0.1.0 .
# Two stages: the toolchain builds the binary (the eBPF programs are C,
# compiled by clang-19 with libbpf's headers inside `cargo build`), and the
# image ships only the binary on distroless/cc (glibc and libgcc_s, which is
# all it links; TLS is rustls). docs/deploy.md explains the privileges the
# DaemonSet grants it.

FROM rust:1.95-bookworm AS build
RUN apt-get update \
 && apt-get install -y --no-install-recommends clang-19 llvm-19 libbpf-dev \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
# Cache mounts keep the crates.io downloads and the target directory
# between builds; the binary is copied out of the cached target/.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/usr/local/cargo/git \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p weir \
 && cp target/release/weir /weir

FROM gcr.io/distroless/cc-debian12
COPY --from=build /weir /usr/local/bin/weir
# uid 0, not the nonroot image: Kubernetes hands the DaemonSet's added
# capabilities (BPF, NET_ADMIN, PERFMON...) to uid 0 only; a non-root uid
# would need file capabilities, which allowPrivilegeEscalation: false
# disables. The DaemonSet drops every other capability.
USER 0:0
ENTRYPOINT ["/usr/local/bin/weir"]
CMD ["agent", "--help"]
