# Myelin container image.
#
#   docker build -t myelin .
#   docker run -d --name myelin -p 8008:8008 -v myelin-data:/data \
#       -e MYELIN_SERVER_NAME=example.org myelin
#   docker run --rm -v myelin-data:/data -e MYELIN_SERVER_NAME=example.org myelin \
#       create-user admin --admin --password '...'          # while the server is stopped
#
# Configuration is by MYELIN_* environment variables (docs/configuration.md), or a TOML file
# mounted into the container: `... myelin serve --config /etc/myelin/myelin.toml`.
# The database lives in the volume /data, owned by the unprivileged user myelin (uid/gid 10001):
# a bind-mounted host directory must be writable by that uid.
#
# Works with the classic builder and with BuildKit; it needs no BuildKit-only syntax.
# Base images: rust:1.95-slim-bookworm and debian:bookworm-slim. On machines without registry
# access, `complement/build-base-images` makes local stand-ins for both (build with
# `docker build --network host .` when the daemon has no bridge network).

# ---- build ---------------------------------------------------------------------------------------
FROM rust:1.95-slim-bookworm AS builder

# RocksDB is Debian's (librocksdb-dev 7.8.3, linked dynamically: see .cargo/config.toml);
# bindgen needs libclang.
RUN apt-get update \
 && apt-get install -y --no-install-recommends libclang-dev librocksdb-dev pkg-config \
 && rm -rf /var/lib/apt/lists/*

WORKDIR /src

# Dependencies first, in a layer of their own that only Cargo.toml, Cargo.lock and .cargo/ invalidate.
# Stub sources stand in for the crate: one for every target Cargo.toml names (keep in step with it).
COPY Cargo.toml Cargo.lock ./
COPY .cargo .cargo
RUN mkdir -p src benches \
 && echo 'fn main() {}' >src/main.rs \
 && : >src/lib.rs \
 && echo 'fn main() {}' >benches/storage.rs \
 && cargo build --release --locked \
 && rm -rf src benches target/release/myelin target/release/myelin.d \
           target/release/.fingerprint/myelin-* target/release/deps/myelin-* target/release/deps/libmyelin-*

# Then the crate itself.
COPY . .
RUN cargo build --release --locked \
 && install -m 0755 target/release/myelin /usr/local/bin/myelin \
 && myelin --version

# ---- run -----------------------------------------------------------------------------------------
FROM debian:bookworm-slim

ARG VERSION=unknown
ARG REVISION=unknown
LABEL org.opencontainers.image.title="Myelin" \
      org.opencontainers.image.description="A Matrix homeserver: fast, light, correct" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.version="$VERSION" \
      org.opencontainers.image.revision="$REVISION" \
      org.opencontainers.image.base.name="docker.io/library/debian:bookworm-slim"

# Runtime libraries only: RocksDB (and what it pulls: snappy, lz4, zstd, bz2, gflags, libstdc++)
# and the CA certificates the HTTP client verifies servers with.
RUN apt-get update \
 && apt-get install -y --no-install-recommends librocksdb7.8 ca-certificates \
 && rm -rf /var/lib/apt/lists/*

RUN groupadd --system --gid 10001 myelin \
 && useradd --system --uid 10001 --gid myelin --home-dir /data --no-create-home \
            --shell /usr/sbin/nologin myelin \
 && mkdir /data \
 && chown myelin:myelin /data \
 && chmod 0700 /data

COPY --from=builder /usr/local/bin/myelin /usr/local/bin/myelin

ENV MYELIN_DATABASE__PATH=/data \
    MYELIN_LISTEN__CLIENT=0.0.0.0:8008
VOLUME ["/data"]
WORKDIR /data
USER 10001:10001
# 8008: client API (plain HTTP, put TLS in front); 8448: federation (TLS), once it is served.
EXPOSE 8008 8448

# `myelin healthcheck` reads the same configuration as the server and asks GET /health on its
# client listener.
HEALTHCHECK --interval=30s --timeout=6s --start-period=20s --retries=3 CMD ["myelin", "healthcheck"]

# SIGTERM (docker stop) shuts the server down cleanly, within limits.shutdown_grace_secs (8 s).
STOPSIGNAL SIGTERM
ENTRYPOINT ["myelin"]
CMD ["serve"]
