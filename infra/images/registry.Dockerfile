# The image registry (the ECR analogue): Debian's docker-registry (docker/distribution 2.8)
# with pixfleet's configuration, infra/registry/config.yml.
#
# The package comes from the base's own Debian suite: the debootstrapped trixie offline, or
# python:3.13-slim's bookworm. Nothing else is installed; python3 (in both bases) runs the
# health check. Built by `pixfleet images build`, by compose (`build:` of the registry service),
# or by hand:
#   docker build -f infra/images/registry.Dockerfile --build-arg BASE_IMAGE=pixfleet/base:trixie \
#       -t pixfleet/registry .
# compose publishes its port on 127.0.0.1:5000 only.

ARG BASE_IMAGE=python:3.13-slim

FROM ${BASE_IMAGE} AS registry
RUN apt-get update -qq \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends docker-registry >/dev/null \
 && rm -rf /var/lib/apt/lists/* /var/cache/apt/archives/*.deb \
 && mkdir -p /var/lib/pixfleet/registry \
 && chown docker-registry /var/lib/pixfleet/registry
COPY infra/registry/config.yml /etc/docker/registry/config.yml
# Inside its own network namespace it listens on every interface; the host side is loopback only.
ENV REGISTRY_HTTP_ADDR=0.0.0.0:5000
USER docker-registry
EXPOSE 5000
VOLUME /var/lib/pixfleet/registry
HEALTHCHECK --interval=5s --timeout=3s --start-period=5s --retries=5 \
    CMD ["python3", "-c", "import urllib.request as u; u.urlopen('http://127.0.0.1:5000/v2/', timeout=3)"]
CMD ["docker-registry", "serve", "/etc/docker/registry/config.yml"]
