# binlog-bridge container image: a multi-stage build, a small runtime image,
# a non-root user, the binary as entrypoint, a health check on /healthz.
FROM rust:1-bookworm AS build
RUN apt-get update \
 && apt-get install -y --no-install-recommends cmake protobuf-compiler libssl-dev libcurl4-openssl-dev pkg-config \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src ./src
COPY tests ./tests
RUN cargo build --release --locked --bin binlog-bridge

FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates libssl3 libcurl4 curl \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --no-create-home bridge
COPY --from=build /src/target/release/binlog-bridge /usr/local/bin/binlog-bridge
USER bridge
EXPOSE 9187
HEALTHCHECK --interval=5s --timeout=2s --retries=3 CMD curl -fsS http://127.0.0.1:9187/healthz || exit 1
ENTRYPOINT ["/usr/local/bin/binlog-bridge"]
CMD ["--config", "/etc/binlog-bridge/binlog-bridge.toml", "run"]
