# syntax=docker/dockerfile:1
# The weir image (agent and relay: one binary) for those who build with
# Docker, from the repository root:
#   docker build --build-arg REVISION=$(git rev-parse HEAD) -t ghcr.io/weir-dev/weir:0.1.0 .
# `make image` builds the same image without Docker or a registry (buildah,
# FROM scratch, reproducible: docs/deploy.md). Both stage the file layout
# with `scripts/image.sh rootfs`: the binary, exactly the shared libraries
# it links and its loader, the CA certificates, /etc/passwd with root and
# the non-root user weir (65532), the image's default user. The DaemonSet
# runs the agent as uid 0 with only the capabilities it adds
# (docs/deploy.md says why); the relay runs as weir.

FROM rust:1.95-bookworm AS build
RUN apt-get update \
 && apt-get install -y --no-install-recommends clang-19 llvm-19 libbpf-dev binutils ca-certificates \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
# Cache mounts keep the crates.io downloads and the target directory
# between builds; the layout is staged out of the cached target/.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/usr/local/cargo/git \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p weir \
 && scripts/image.sh rootfs target/release/weir /rootfs

FROM scratch
ARG VERSION=0.1.0
ARG REVISION=unknown
COPY --from=build /rootfs /
LABEL org.opencontainers.image.title="weir" \
      org.opencontainers.image.description="weir: Kubernetes traffic observer (agent and relay)" \
      org.opencontainers.image.source="https://github.com/weir-dev/weir" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.licenses="Apache-2.0 AND (GPL-2.0-only OR BSD-2-Clause)"
ENV PATH=/usr/local/bin
USER 65532:65532
ENTRYPOINT ["/usr/local/bin/weir"]
CMD ["agent", "--help"]
