# syntax=docker/dockerfile:1
# fledger: command-svc, query-svc and the fledger CLI in one Debian 12 image.
#
#   docker build -t fledger:local .
#   docker run --rm fledger:local command-svc --help
#
# compose.yaml runs it (see README "Running with Docker Compose"). The
# sources are copied directory by directory, so that local build trees,
# node_modules and .run/ (demo keys and tokens) never enter the image or its
# build cache; a new top-level source directory needs a COPY line here
# (tests/ops/test_compose.sh checks that every subdir() of meson.build has one).

# ---- build -----------------------------------------------------------------
FROM debian:12 AS build
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      build-essential pkg-config meson ninja-build \
      libnats-dev liblmdb-dev libmicrohttpd-dev libjansson-dev libssl-dev \
      libgnutls28-dev libcriterion-dev libcurl4-openssl-dev \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY meson.build ./
COPY core/ core/
COPY eventlog/ eventlog/
COPY model/ model/
COPY shared/ shared/
COPY command-svc/ command-svc/
COPY query-svc/ query-svc/
COPY cli/ cli/
COPY bench/ bench/
# tests/meson.build declares the unit tests (meson checks their sources exist).
COPY tests/meson.build tests/*.c tests/
# The project's default build type (debugoptimized, -O2, warnings as errors)
# is the one its test suite runs; the binaries are stripped on install.
RUN meson setup /build \
 && ninja -C /build command-svc/command-svc query-svc/query-svc cli/fledger \
 && install -D -s -m 0755 -t /out/usr/local/bin \
      /build/command-svc/command-svc /build/query-svc/query-svc /build/cli/fledger

# ---- run -------------------------------------------------------------------
FROM debian:12-slim
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      libnats3.4 liblmdb0 libmicrohttpd12 libjansson4 libssl3 libgnutls30 libcurl4 \
      ca-certificates curl \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --home-dir /var/lib/fledger --create-home \
      --shell /usr/sbin/nologin fledger
COPY --from=build /out/ /
COPY schemas/views/ /usr/share/fledger/views/
USER fledger
WORKDIR /var/lib/fledger
VOLUME ["/var/lib/fledger"]
EXPOSE 8080 8081
# Inside a container the services must listen beyond loopback; publish the
# ports on the host's loopback (as compose.yaml does) or configure TLS.
ENV FLEDGER_LOG_LEVEL=info
STOPSIGNAL SIGTERM
CMD ["command-svc", "--help"]
