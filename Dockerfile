# syntax=docker/dockerfile:1
# edgecache in a container. Build: docker build -t edgecache .
# Run (docs/operations.md has more):
#   docker run -d --name edgecache -p 9292:9292 --stop-timeout 60 \
#       -v edgecache-cache:/var/cache/edgecache \
#       edgecache serve --listen 0.0.0.0:9292 --cache-dir /var/cache/edgecache \
#       --upstream http://glance.region.example:9292 --max-size 200GiB
# A config file instead: mount it on /etc/edgecache/edgecache.toml, or anywhere named by
# EDGECACHE_CONFIG (flags, such as the default CMD's --listen and --cache-dir, still win).
# TLS: mount the certificates read-only on /etc/edgecache/tls and name them in the config
# ([upstream] ca_file, client_cert, client_key; [server] tls_cert, tls_key, tls_client_ca):
#   docker run ... -v /etc/edgecache/tls:/etc/edgecache/tls:ro \
#       -v /etc/edgecache/edgecache.toml:/etc/edgecache/edgecache.toml:ro edgecache
# After renewing them: `docker kill --signal HUP edgecache` (no restart, transfers go on).

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

# Stage 1: wheels for edgecache and every dependency, so the final stage needs no compiler,
# no build backend and no network of its own.
FROM ${PYTHON_IMAGE} AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY edgecache ./edgecache
RUN pip wheel --no-cache-dir --wheel-dir /wheels .

# Stage 2: the runtime, without pip's caches or the wheels themselves (mounted, not copied).
FROM ${PYTHON_IMAGE}
# XDG_CACHE_HOME: edgecache's default cache dir becomes /var/cache/edgecache for every
# command, so `docker exec ... edgecache status` finds the daemon's admin socket there.
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    XDG_CACHE_HOME=/var/cache
RUN --mount=type=bind,from=build,source=/wheels,target=/wheels \
    pip install --no-cache-dir --no-index --find-links=/wheels /wheels/edgecache-*.whl \
    && useradd --system --uid 10001 --user-group --home-dir /var/cache/edgecache \
        --shell /usr/sbin/nologin edgecache \
    && install -d -o edgecache -g edgecache -m 0750 /var/cache/edgecache
# Created above with the right owner, so a new named volume starts out writable by edgecache.
VOLUME ["/var/cache/edgecache"]
# Numeric, so orchestrators can check runAsNonRoot without reading /etc/passwd.
USER 10001:10001
WORKDIR /var/cache/edgecache
EXPOSE 9292
# Liveness only, through the admin socket: the daemon answers whether or not the uplink is up,
# so an edge site cut off from the region does not get its cache restarted. The socket works
# the same with plain HTTP, edgecache's own HTTPS or client certificates on the listen address,
# and needs no proxy settings.
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
    CMD ["edgecache", "status"]
ENTRYPOINT ["edgecache"]
# The upstream Glance has no sensible default: add `--upstream URL` (or a config file).
CMD ["serve", "--listen", "0.0.0.0:9292", "--cache-dir", "/var/cache/edgecache"]
