# Myelin container image, from a release binary built on Debian 12 (bookworm).
#
#   cargo build --release
#   docker build -t myelin .
#   docker run -d --name myelin -p 127.0.0.1:8008:8008 -v myelin-data:/data \
#       -e MYELIN_SERVER_NAME=example.org myelin
#   docker run --rm -v myelin-data:/data -e MYELIN_SERVER_NAME=example.org myelin \
#       create-user admin --admin --password '...'          # while the server is stopped
#
# The binary comes from the build context: `target/release/myelin` by default, or the path given
# with `--build-arg BINARY=...` (inside the context). RocksDB (Debian 12's, 7.8) and the C++ runtime are
# linked into it statically; it needs Debian 12's C library, so build it on Debian 12 or in a
# Debian 12 container. `.dockerignore` keeps everything else out of the context.
#
# Configuration is by MYELIN_* environment variables (docs/configuration.md), or a TOML file
# mounted into the container: `... myelin serve --config /etc/myelin/myelin.toml`.
# The database lives in the volume /data, owned by the unprivileged user myelin (uid/gid 10001):
# a bind-mounted host directory must be writable by that uid.
#
# Base image: debian:bookworm-slim. On machines that cannot pull from a registry,
# `complement/build-base-images debian` makes a local one with debootstrap and `docker import`;
# tests/docker/run builds and runs this image that way. Building needs Debian's package mirror
# (`docker build --network host .` when the daemon has no bridge network).

FROM debian:bookworm-slim

ARG VERSION=unknown
ARG REVISION=unknown
LABEL org.opencontainers.image.title="Myelin" \
      org.opencontainers.image.description="A Matrix homeserver: fast, light, correct" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.version="$VERSION" \
      org.opencontainers.image.revision="$REVISION" \
      org.opencontainers.image.base.name="docker.io/library/debian:bookworm-slim"

# Runtime libraries only: the CA certificates the HTTP client verifies servers with, and the C++
# runtime for a binary built where the compiler had no static one (build.rs links it in when it can).
RUN apt-get update \
 && apt-get install -y --no-install-recommends libstdc++6 ca-certificates \
 && rm -rf /var/lib/apt/lists/*

RUN groupadd --system --gid 10001 myelin \
 && useradd --system --uid 10001 --gid myelin --home-dir /data --no-create-home \
            --shell /usr/sbin/nologin myelin \
 && mkdir /data \
 && chown myelin:myelin /data \
 && chmod 0700 /data

ARG BINARY=target/release/myelin
COPY ${BINARY} /usr/local/bin/myelin
RUN myelin --version

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
