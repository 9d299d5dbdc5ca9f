# syntax=docker/dockerfile:1
# One image with every FoodLab binary in /usr/local/bin: the services (order, inventory,
# notification, analytics), the operator (foodlab-operator) and the CLI (foodlab).
# The charts pick the binary with `command:`; the image has no entrypoint of its own.
#
#   docker build -t foodlab:dev .        (scripts/kind.sh up does this, then `kind load`s it)

FROM rust:1-bookworm AS build
# cmake (and curl, ssl, zlib headers) for the librdkafka that rdkafka builds from source.
RUN apt-get update \
 && apt-get install -y --no-install-recommends cmake libcurl4-openssl-dev libssl-dev zlib1g-dev pkg-config \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
# The cache mounts keep downloaded crates and compiled dependencies between builds
# (BuildKit, the default builder of Docker 23 and later). Cargo's JSON messages name the
# binaries this build produced, so exactly those are copied out of the cached target dir.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/usr/local/cargo/git \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --workspace --bins --message-format=json-render-diagnostics \
      > /tmp/cargo-messages.json \
 && mkdir -p /out/bin \
 && grep '"kind":\["bin"\]' /tmp/cargo-messages.json \
    | grep -o '"executable":"[^"]*"' | cut -d'"' -f4 | sort -u \
    | xargs -r cp -t /out/bin/ \
 && ls -l /out/bin && test -x /out/bin/foodlab
# The Debian packages that hold the shared libraries the binaries link (for the runtime stage).
RUN for bin in /out/bin/*; do ldd "$bin"; done \
    | awk '$2 == "=>" && $3 ~ /^\// {print $3}' | sort -u \
    | while read -r lib; do \
        for path in "$lib" "$(readlink -f "$lib")" "/usr$lib" "${lib#/usr}"; do \
          dpkg -S "$path" 2>/dev/null && break; \
        done; \
      done \
    | cut -d: -f1 | sort -u > /out/runtime-packages \
 && cat /out/runtime-packages

FROM debian:bookworm-slim
COPY --from=build /out/runtime-packages /tmp/runtime-packages
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates $(cat /tmp/runtime-packages) \
 && rm -rf /var/lib/apt/lists/* /tmp/runtime-packages \
 && groupadd --gid 10001 foodlab \
 && useradd --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin foodlab \
 && install -d -o 10001 -g 10001 /data
COPY --from=build /out/bin/ /usr/local/bin/
# Fail the build, not the pod, if a binary misses a shared library.
RUN for bin in /usr/local/bin/*; do \
      if ldd "$bin" | grep 'not found'; then echo "$bin: missing shared library" >&2; exit 1; fi; \
    done
ENV FOODLAB_DATA_DIR=/data
WORKDIR /data
# Numeric, so Kubernetes can check runAsNonRoot against it.
USER 10001:10001
CMD ["foodlab", "--help"]
