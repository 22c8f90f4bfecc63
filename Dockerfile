# syntax=docker/dockerfile:1
# Causeway: one image, one binary for every role —
#   causeway operator | backend | frontend | gateway | local | origin
# — and the DNS redirector, causeway-redirector (the chart runs it with
# command: [/usr/local/bin/causeway-redirector]).
# Build:  docker build -t ghcr.io/causeway-dev/causeway:0.1.0 .
# Push:   docker push ghcr.io/causeway-dev/causeway:0.1.0
# Use:    helm install causeway charts/causeway --set image.repository=ghcr.io/causeway-dev/causeway

# The toolchain the workspace is tested with (edition 2024; rust-version 1.89 is the floor).
FROM rust:1.95-bookworm AS builder
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked \
        -p causeway --bin causeway \
        -p causeway-redirector --bin causeway-redirector \
    && install -D -m 0755 target/release/causeway /out/causeway \
    && install -D -m 0755 target/release/causeway-redirector /out/causeway-redirector

# distroless/cc has glibc and libgcc (jemalloc and ring need them), no shell, and the
# nonroot user 65532, which the operator's pod specs also name.
FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=builder /out/causeway /out/causeway-redirector /usr/local/bin/
USER 65532:65532
# causeway: 8080 (HTTP), 4433/udp (TMP), 9090 9901 9902 (admin); causeway-redirector: 1053
# UDP and TCP (DNS, unprivileged: the Service maps 53 to it), 9053 (admin).
EXPOSE 8080 4433/udp 9090 9901 9902 1053/udp 1053/tcp 9053
ENTRYPOINT ["causeway"]
CMD ["--help"]
