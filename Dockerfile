# rtc-exporter's container image: the release binary on distroless (glibc, CA certificates, no
# shell), run as the numeric non-root user 65532, with the Debian package's paths:
#   /usr/bin/rtc-exporter, /etc/rtc-exporter/exporter.yaml (packaging/exporter.yaml: no target),
#   /var/lib/rtc-exporter (global.state_file's folder: a volume).
#
#   docker build -t rtc-exporter:0.1.0 \
#     --build-arg RTC_EXPORTER_REVISION="$(git rev-parse --short=12 HEAD)" .
#
# The Kubernetes manifests (deploy/kubernetes/) mount their own exporter.yaml over the packaged
# one. The tests check this file's facts (tests/deploy.rs) and .ci/run lints it (hadolint);
# nothing in CI builds it (no registry to pull the base images from).

# The Rust the project builds with, on Debian 12 (bookworm): the binary needs no newer glibc than
# the run stage's Debian 12 has.
FROM rust:1.95-bookworm AS build
# The build date and git revision `--version` and rtc_exporter_build_info show: .git is not sent
# to the build (.dockerignore), so pass them.
ARG RTC_EXPORTER_REVISION
ARG SOURCE_DATE_EPOCH
WORKDIR /src
COPY . .
RUN cargo build --release --locked \
 && install -D -m 0755 target/release/rtc-exporter /out/usr/bin/rtc-exporter \
 && install -d -m 0700 /out/var/lib/rtc-exporter

FROM gcr.io/distroless/cc-debian12:nonroot
LABEL org.opencontainers.image.title="rtc-exporter" \
      org.opencontainers.image.description="Prometheus exporter for real-time audio/video rooms" \
      org.opencontainers.image.licenses="Apache-2.0"
COPY --from=build /out/usr/bin/rtc-exporter /usr/bin/rtc-exporter
COPY packaging/exporter.yaml /etc/rtc-exporter/exporter.yaml
COPY --from=build --chown=65532:65532 /out/var/lib/rtc-exporter /var/lib/rtc-exporter
USER 65532:65532
EXPOSE 10063
VOLUME ["/var/lib/rtc-exporter"]
# Listens on :10063 (every interface, the default). More flags: `docker run IMAGE --log.level=debug`.
ENTRYPOINT ["/usr/bin/rtc-exporter", "--config.file=/etc/rtc-exporter/exporter.yaml"]
