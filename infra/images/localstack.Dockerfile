# LocalStack 4.14.0 built from PyPI (localstack-core[runtime]) instead of pulled from a registry.
#
# 4.14.0 is the last LocalStack release that starts without an account token. Its
# dependencies are locked in infra/images/localstack.lock as resolved on 2026-02-27
# (later cbor2 and pyOpenSSL releases break it). It needs Python 3.13: Debian trixie's
# python3, or python:3.13-slim. Built by `pixfleet images build --offline`, or by hand:
#   docker build -f infra/images/localstack.Dockerfile -t pixfleet/localstack:4.14.0-offline .

ARG BASE_IMAGE=python:3.13-slim

FROM ${BASE_IMAGE} AS python
ENV LANG=C.UTF-8 \
    PYTHONUNBUFFERED=1 \
    VIRTUAL_ENV=/opt/code/localstack/.venv \
    PATH=/opt/code/localstack/.venv/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin

FROM python AS deps
COPY infra/images/extra/ /tmp/build/
RUN cat /etc/ssl/certs/ca-certificates.crt $(find /tmp/build/ca -name '*.pem' -o -name '*.crt' 2>/dev/null) > /tmp/build/ca-bundle.crt \
 && { echo '[global]'; echo 'cert = /tmp/build/ca-bundle.crt'; echo 'no-cache-dir = true'; \
      echo 'disable-pip-version-check = true'; echo 'retries = 10'; \
      if [ -n "$(find /tmp/build/wheels -type f 2>/dev/null | head -1)" ]; then \
        echo 'no-index = true'; echo 'find-links = /tmp/build/wheels'; fi; } > /tmp/build/pip.conf \
 && python3 -m venv /opt/code/localstack/.venv
ENV PIP_CONFIG_FILE=/tmp/build/pip.conf
COPY infra/images/localstack.lock /tmp/build/
RUN pip install --require-hashes --no-deps -r /tmp/build/localstack.lock && pip check

FROM python AS localstack
# Its user, and the folders LocalStack writes (as in LocalStack's own image).
RUN echo 'localstack:x:10002:10002:localstack:/var/lib/localstack:/usr/sbin/nologin' >> /etc/passwd \
 && echo 'localstack:x:10002:' >> /etc/group \
 && mkdir -p /var/lib/localstack /tmp/localstack /usr/lib/localstack /etc/localstack/init \
 && chown 10002:10002 /var/lib/localstack /tmp/localstack /usr/lib/localstack
COPY --from=deps /opt/code/localstack/.venv /opt/code/localstack/.venv
# Served on 4566 only; no DNS server, no certificate download, no usage events: it runs offline.
ENV GATEWAY_LISTEN=0.0.0.0:4566 \
    DNS_ADDRESS=0 \
    SKIP_SSL_CERT_DOWNLOAD=1 \
    DISABLE_EVENTS=1
WORKDIR /opt/code/localstack
USER 10002:10002
EXPOSE 4566
HEALTHCHECK --interval=5s --timeout=3s --start-period=15s --retries=10 \
    CMD ["python", "-c", "import urllib.request as u; u.urlopen('http://127.0.0.1:4566/_localstack/health', timeout=3)"]
CMD ["python", "-m", "localstack.runtime.main"]
