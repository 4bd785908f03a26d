# The user-facing image: a normal multi-stage build for machines that can pull images
# (it cannot be built offline). Without a registry use scripts/build-images.sh, which
# builds FROM-scratch images from the host's `target/release` (what the demo built).
# This build uses the `bench-release` profile (fat LTO, one codegen unit): the
# fastest binary, the one the benchmarks measure. .dockerignore keeps target/ and
# .git/ out of the context.
FROM rust:1-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src ./src
COPY crates ./crates
COPY examples ./examples
COPY benches ./benches
RUN cargo build --profile bench-release --locked -p sluicegate -p sluicegate-echo-agent --bins

FROM debian:bookworm-slim
RUN useradd --system --uid 10001 --no-create-home sluicegate
COPY --from=build /src/target/bench-release/sluicegate /usr/local/bin/sluicegate
COPY --from=build /src/target/bench-release/echo_agent /usr/local/bin/echo_agent
COPY config/routes.toml /etc/sluicegate/routes.toml
USER 10001
EXPOSE 8080
STOPSIGNAL SIGTERM
# Asks the admin API's /readyz on 127.0.0.1:9901 (needs no token); no curl in the image.
HEALTHCHECK --interval=10s --timeout=3s CMD ["/usr/local/bin/sluicegate", "health", "--timeout", "2s"]
ENTRYPOINT ["/usr/local/bin/sluicegate"]
CMD ["run", "-c", "/etc/sluicegate/routes.toml"]
