# syntax=docker/dockerfile:1
# The operator image, for amd64 and arm64 (Graviton):
#   docker buildx build --platform linux/amd64,linux/arm64 -t REGISTRY/vpc-cni-tuner:0.1.0 --push .
# (plain `docker build -t REGISTRY/vpc-cni-tuner:0.1.0 .` builds the host's architecture).
# Multi-stage: the build stage runs on the build machine's platform and cross-compiles for each
# target with the project's pinned toolchain (no emulation); the runtime stage is distroless
# (glibc, CA certificates, no shell, no package manager) and runs as a non-root user.
# tests/container.rs checks this file and runs the binary the way the chart runs the image.

FROM --platform=$BUILDPLATFORM docker.io/library/rust:1.95.0-slim-bookworm AS build
ARG TARGETARCH
WORKDIR /src
# The Rust target and the C cross toolchain (aws-lc-rs compiles C) of the image's architecture.
RUN case "$TARGETARCH" in \
      amd64) target=x86_64-unknown-linux-gnu; gcc=gcc-x86-64-linux-gnu ;; \
      arm64) target=aarch64-unknown-linux-gnu; gcc=gcc-aarch64-linux-gnu ;; \
      *) echo "unsupported TARGETARCH '$TARGETARCH' (amd64, arm64)" >&2; exit 1 ;; \
    esac \
    && apt-get update \
    && apt-get install -y --no-install-recommends "$gcc" "libc6-dev-$TARGETARCH-cross" \
    && rm -rf /var/lib/apt/lists/* \
    && rustup target add "$target" \
    && echo "$target" > /rust-target
ENV CARGO_TARGET_X86_64_UNKNOWN_LINUX_GNU_LINKER=x86_64-linux-gnu-gcc \
    CC_x86_64_unknown_linux_gnu=x86_64-linux-gnu-gcc \
    CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_LINKER=aarch64-linux-gnu-gcc \
    CC_aarch64_unknown_linux_gnu=aarch64-linux-gnu-gcc
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target,id=vpc-cni-tuner-target-$TARGETARCH \
    target="$(cat /rust-target)" \
    && cargo build --release --locked --bin vpc-cni-tuner --target "$target" \
    && install -D -m 0755 "target/$target/release/vpc-cni-tuner" /out/vpc-cni-tuner

FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /out/vpc-cni-tuner /usr/local/bin/vpc-cni-tuner
# The chart's podSecurityContext runs as the same user (runAsUser 65532).
USER 65532:65532
EXPOSE 8080
ENTRYPOINT ["/usr/local/bin/vpc-cni-tuner"]
CMD ["run"]
