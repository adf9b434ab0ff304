"""nginx with `proxy_cache` in front of the synthetic Glance: install, configure, start.

The configuration is what an operator would reasonably deploy as a Glance cache: a cache lock
so concurrent misses make one upstream request, sendfile for hits, upstream keep-alive.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from benchmarks.services import Service, free_port, launch_on_free_port

_CONFIG = """\
user root;
worker_processes {workers};
pid {dir}/nginx.pid;
error_log {dir}/error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log {dir}/access.log;
    client_body_temp_path {dir}/tmp/body;
    proxy_temp_path {dir}/tmp/proxy;
    fastcgi_temp_path {dir}/tmp/fastcgi;
    uwsgi_temp_path {dir}/tmp/uwsgi;
    scgi_temp_path {dir}/tmp/scgi;
    sendfile on;
    tcp_nopush on;
    keepalive_requests 100000;
    proxy_cache_path {dir}/cache levels=1:2 keys_zone=glance:16m max_size={max_size}
                     inactive=1d use_temp_path=off;
    upstream glance {{
        server 127.0.0.1:{upstream_port};
        keepalive 32;
    }}
    server {{
        listen 127.0.0.1:{port};
{location}    }}
    # The same behind TLS: edgecache's certificate, TLS 1.2/1.3 with OpenSSL's default suites
    # (the ones edgecache's Python gets from the same library), no kernel TLS (Python has none).
    server {{
        listen 127.0.0.1:{tls_port} ssl;
        ssl_certificate {tls_cert};
        ssl_certificate_key {tls_key};
        ssl_protocols TLSv1.2 TLSv1.3;
{location}    }}
}}
"""

_LOCATION = """\
        location / {
            proxy_pass http://glance;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_buffering on;
            proxy_buffer_size 64k;
            proxy_buffers 64 64k;
            proxy_busy_buffers_size 256k;
            proxy_read_timeout 600s;
            proxy_cache glance;
            proxy_cache_key $scheme$proxy_host$request_uri;
            proxy_cache_valid 200 1d;
            # Serve Range requests from the cached copy (Glance sends no Accept-Ranges).
            proxy_force_ranges on;
            # One upstream fetch per missing object; the others wait for the whole fill.
            proxy_cache_lock on;
            proxy_cache_lock_timeout 30m;
            proxy_cache_lock_age 30m;
            add_header X-Cache-Status $upstream_cache_status always;
        }
"""


def ensure_installed() -> str:
    """The nginx binary, installing Debian's nginx-light first if there is none."""
    found = shutil.which("nginx") or shutil.which("nginx", path="/usr/sbin:/sbin")
    if found:
        return found
    print("nginx not found: apt-get install -y nginx-light", flush=True)
    env_quiet = {"DEBIAN_FRONTEND": "noninteractive", "PATH": "/usr/sbin:/usr/bin:/sbin:/bin"}
    subprocess.run(["apt-get", "update", "-qq"], check=True, env=env_quiet)
    subprocess.run(
        ["apt-get", "install", "-y", "-qq", "nginx-light"],
        check=True,
        env=env_quiet,
        stdout=subprocess.DEVNULL,
    )
    found = shutil.which("nginx", path="/usr/sbin:/usr/bin")
    if not found:
        raise RuntimeError("nginx-light was installed but no nginx binary was found")
    return found


def version(binary: str) -> str:
    done = subprocess.run([binary, "-v"], capture_output=True, text=True, check=True)
    return done.stderr.strip().removeprefix("nginx version: ")


def start(
    binary: str,
    directory: Path,
    upstream_port: int,
    max_size: int,
    workers: str,
    tls: tuple[Path, Path],
) -> tuple[Service, int]:
    """Write a configuration into `directory` and run nginx in the foreground on a free port
    (plain HTTP), and on a second one with TLS (`tls`: certificate and key); returns the
    service and the TLS port."""
    tls_port = free_port()
    (directory / "tmp").mkdir(parents=True, exist_ok=True)
    conf = directory / "nginx.conf"

    def argv(port: int) -> list[str]:
        conf.write_text(
            _CONFIG.format(
                dir=directory,
                port=port,
                upstream_port=upstream_port,
                max_size=max_size,
                workers=workers,
                location=_LOCATION,
                tls_port=tls_port,
                tls_cert=tls[0],
                tls_key=tls[1],
            )
        )
        return [binary, "-p", str(directory), "-c", str(conf), "-g", "daemon off;"]

    return launch_on_free_port("nginx", argv, "/", directory / "nginx.out"), tls_port
