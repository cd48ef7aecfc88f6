# ringway in a container: the same files as the Debian package, installed from that
# package. Build: `docker build -t ringway .`; run:
#   docker run -p 8080:8080 -v /srv/ringway.yaml:/etc/ringway/ringway.yaml:ro \
#              -v ringway-data:/var/lib/ringway ringway
# The builder stage runs scripts/package-deb.sh (a release build, the man pages and
# completions, then `cargo deb`); the runtime stage installs the .deb, as a host would.

ARG RUST_VERSION=1.95
FROM rust:${RUST_VERSION}-bookworm AS build
RUN cargo install cargo-deb --locked --version 3.8.0
WORKDIR /src
COPY . .
RUN OUT=/out scripts/package-deb.sh

FROM debian:bookworm-slim
COPY --from=build /out/ /tmp/deb/
RUN apt-get update \
    && apt-get install -y --no-install-recommends /tmp/deb/ringway_*.deb \
    && rm -rf /var/lib/apt/lists/* /tmp/deb
# A fixed unprivileged user in place of the systemd unit's DynamicUser; its home is
# node.data_dir of the packaged config.
RUN useradd --system --user-group --home-dir /var/lib/ringway --shell /usr/sbin/nologin ringway \
    && install -d -o ringway -g ringway -m 0700 /var/lib/ringway
USER ringway
VOLUME /var/lib/ringway
# The packaged config's listener; its admin API stays on 127.0.0.1:9480 inside.
EXPOSE 8080
# The admin API answers for this instance; ringway itself asks it, so the image
# needs no HTTP client.
HEALTHCHECK --interval=30s --timeout=10s --start-period=10s --retries=3 \
    CMD ["/usr/bin/ringway", "cluster", "status", "--json", "-c", "/etc/ringway/ringway.yaml", "--log-level", "error"]
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/bin/ringway"]
CMD ["run", "-c", "/etc/ringway/ringway.yaml"]
