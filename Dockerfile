# syntax=docker/dockerfile:1
# The operator image: docker build -t REGISTRY/vpc-cni-tuner:0.1.0 .
# Multi-stage: the build stage compiles with the project's pinned toolchain; the runtime stage is
# distroless (glibc, CA certificates, no shell, no package manager) and runs as a non-root user.
# tests/container.rs checks this file and runs the binary the way the chart runs the image.

FROM docker.io/library/rust:1.95.0-slim-bookworm AS build
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --bin vpc-cni-tuner \
    && install -D -m 0755 target/release/vpc-cni-tuner /out/vpc-cni-tuner

FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /out/vpc-cni-tuner /usr/local/bin/vpc-cni-tuner
# The chart's podSecurityContext runs as the same user (runAsUser 65532).
USER 65532:65532
EXPOSE 8080
ENTRYPOINT ["/usr/local/bin/vpc-cni-tuner"]
CMD ["run"]
