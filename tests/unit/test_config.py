from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import trustme

from edgecache import tls
from edgecache.cli import main
from edgecache.config import TOML_KEYS, ConfigError, load_settings, parse_size


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("500MiB", 500 * 2**20),
        ("20GiB", 20 * 2**30),
        ("1.5TB", 1_500_000_000_000),
        ("1024", 1024),
        (4096, 4096),
        ("10 kib", 10240),
    ],
)
def test_sizes(text: str | int, expected: int) -> None:
    assert parse_size(text) == expected


@pytest.mark.parametrize("text", ["", "lots", "5XB", "-1GiB", "1..5GB"])
def test_bad_sizes_name_the_key(text: str) -> None:
    with pytest.raises(ConfigError, match=r"^cache\.max_size: "):
        parse_size(text, "cache.max_size")


def test_toml_then_flags(tmp_path: Path) -> None:
    config = tmp_path / "edgecache.toml"
    config.write_text(
        '[upstream]\nurl = "http://glance:9292"\nread_timeout = 12\n'
        '[server]\nlisten = "0.0.0.0:9000"\n'
        '[cache]\ndir = "/var/cache/x"\nmax_size = "2GiB"\nverify_reads = false\n'
    )
    settings = load_settings(config, {"listen": "127.0.0.2:9393", "max_size": None})
    assert settings.upstream == "http://glance:9292"
    assert (settings.listen_host, settings.listen_port) == ("127.0.0.2", 9393)
    assert settings.max_size == 2 * 2**30
    assert settings.read_timeout == 12.0
    assert settings.verify_reads is False
    assert str(settings.cache_dir) == "/var/cache/x"


def test_fill_memory_is_a_size_with_a_sane_default(tmp_path: Path) -> None:
    assert load_settings(None, {"upstream": "http://x"}).fill_memory == 48 * 2**20
    config = tmp_path / "edgecache.toml"
    config.write_text('[upstream]\nurl = "http://x"\n[cache]\nfill_memory = "96MiB"\n')
    assert load_settings(config, {}).fill_memory == 96 * 2**20


def test_connection_pools_from_toml(tmp_path: Path) -> None:
    config = tmp_path / "edgecache.toml"
    config.write_text(
        '[upstream]\nurl = "http://glance:9292"\n'
        "data_connections = 4\nmetadata_connections = 9\npool_wait = 2.5\n"
    )
    settings = load_settings(config, {})
    assert (settings.data_connections, settings.metadata_connections) == (4, 9)
    assert settings.pool_wait == 2.5


def test_upstream_flag_is_enough() -> None:
    settings = load_settings(None, {"upstream": "https://region.example:9292/image"})
    assert settings.upstream_url == "https://region.example:9292/image"
    assert (settings.listen_host, settings.listen_port) == ("127.0.0.1", 9292)


@pytest.mark.parametrize(
    ("toml", "key"),
    [
        ('[upstream]\nurl = "ftp://x"\n', "upstream.url"),
        ('[upstream]\nurl = "http://x"\n[cache]\nmax_size = "big"\n', "cache.max_size"),
        ('[upstream]\nurl = "http://x"\n[cache]\nchunk_size = "1KiB"\n', "cache.chunk_size"),
        ('[upstream]\nurl = "http://x"\n[cache]\nfill_memory = "512KiB"\n', "cache.fill_memory"),
        ('[upstream]\nurl = "http://x"\n[cache]\nfill_memory = "lots"\n', "cache.fill_memory"),
        ('[upstream]\nurl = "http://x"\n[server]\nlisten = "nowhere"\n', "server.listen"),
        ('[upstream]\nurl = "http://x"\ncolour = "blue"\n', "upstream.colour"),
        ('[upstream]\nurl = "http://x"\n[cash]\n', "cash"),
        ("[cache]\n", "upstream.url"),
        ('[upstream]\nurl = "http://x"\nread_timeout = "soon"\n', "upstream.read_timeout"),
        ('[upstream]\nurl = "http://x"\nstall_timeout = 0\n', "upstream.stall_timeout"),
        ('[upstream]\nurl = "http://x"\n[cache]\nreverify_after = -1\n', "cache.reverify_after"),
        ('[upstream]\nurl = "http://x"\nfallbacks = ["ftp://y"]\n', "upstream.fallbacks"),
        ('[upstream]\nurl = "http://x"\ndata_connections = 0\n', "upstream.data_connections"),
        (
            '[upstream]\nurl = "http://x"\nmetadata_connections = 2.5\n',
            "upstream.metadata_connections",
        ),
        ('[upstream]\nurl = "http://x"\npool_wait = 0\n', "upstream.pool_wait"),
        ("not toml [", "config"),
    ],
)
def test_bad_config_names_the_key(tmp_path: Path, toml: str, key: str) -> None:
    config = tmp_path / "bad.toml"
    config.write_text(toml)
    with pytest.raises(ConfigError) as raised:
        load_settings(config, {})
    assert raised.value.key == key


def test_cli_bad_setting_exits_2_with_one_line(tmp_path: Path) -> None:
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "edgecache",
            "serve",
            "--upstream",
            "http://x",
            "--max-size",
            "a lot",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
    )
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1
    assert "--max-size" in lines[0]


def test_cli_missing_config_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["serve", "--config", str(tmp_path / "absent.toml")]) == 2
    assert "cannot read" in capsys.readouterr().err


def test_example_config_documents_every_setting() -> None:
    example = Path(__file__).parents[2] / "config" / "edgecache.toml"
    settings = load_settings(example, {})
    text = example.read_text()
    for section, keys in TOML_KEYS.items():
        assert f"[{section}]" in text
        for key in keys:
            assert f"\n{key} = " in text, f"{section}.{key} is not in the example"
    assert settings.upstream.startswith("http")


@pytest.fixture
def pems(tmp_path: Path) -> dict[str, Path]:
    """A CA, a certificate and its key, a key of another certificate, and a file that is no PEM."""
    ca = trustme.CA()
    leaf, other = ca.issue_cert("edge.example"), ca.issue_cert("other.example")
    files = {
        "ca": tmp_path / "ca.pem",
        "cert": tmp_path / "cert.pem",
        "key": tmp_path / "key.pem",
        "other_key": tmp_path / "other.key",
        "text": tmp_path / "notes.txt",
    }
    ca.cert_pem.write_to_path(str(files["ca"]))
    leaf.cert_chain_pems[0].write_to_path(str(files["cert"]))
    leaf.private_key_pem.write_to_path(str(files["key"]))
    other.private_key_pem.write_to_path(str(files["other_key"]))
    files["text"].write_text("not a certificate\n")
    return files


@pytest.mark.parametrize(
    ("tables", "key", "problem"),
    [
        ({"upstream": {"ca_file": "absent.pem"}}, "upstream.ca_file", "no such file"),
        ({"upstream": {"ca_file": "text"}}, "upstream.ca_file", "holds no PEM certificate"),
        ({"keystone": {"ca_file": "text"}}, "keystone.ca_file", "holds no PEM certificate"),
        ({"upstream": {"client_cert": "key"}}, "upstream.client_cert", "no PEM certificate"),
        ({"upstream": {"client_cert": "cert"}}, "upstream.client_key", "required with"),
        ({"upstream": {"client_key": "key"}}, "upstream.client_key", "set upstream.client_cert"),
        (
            {"upstream": {"client_cert": "cert", "client_key": "other_key"}},
            "upstream.client_key",
            "cannot be used together",
        ),
        ({"server": {"tls_cert": "cert", "tls_key": "text"}}, "server.tls_key", "no PEM private"),
        (
            {"server": {"tls_cert": "cert", "tls_key": "other_key"}},
            "server.tls_key",
            "cannot be used together",
        ),
        ({"server": {"tls_client_ca": "ca"}}, "server.tls_client_ca", "need server.tls_cert"),
        ({"upstream": {"verify": "no"}}, "upstream.verify", "expected true or false"),
    ],
)
def test_bad_tls_files_stop_start_up_with_exit_2_naming_the_key(
    tmp_path: Path,
    pems: dict[str, Path],
    capsys: pytest.CaptureFixture[str],
    tables: dict[str, dict[str, object]],
    key: str,
    problem: str,
) -> None:
    lines = ['[upstream]\nurl = "https://glance.region.example:9292"\n']
    for section, table in tables.items():
        lines.append(f"[{section}]\n" if section != "upstream" else "")
        for name, value in table.items():
            text = str(pems.get(str(value), tmp_path / str(value)))
            lines.append(f'{name} = "{text}"\n' if name != "verify" else f'{name} = "{value}"\n')
    config = tmp_path / "edgecache.toml"
    config.write_text("".join(lines))
    assert main(["serve", "--config", str(config)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1
    assert err[0].startswith(f"edgecache: invalid configuration: {key}: ")
    assert problem in err[0]


def test_tls_files_that_are_fine_are_taken(tmp_path: Path, pems: dict[str, Path]) -> None:
    settings = load_settings(
        None,
        {
            "upstream": "https://glance.region.example:9292",
            "upstream_ca_file": str(tmp_path),  # a directory of CAs
            "upstream_client_cert": str(pems["cert"]),
            "upstream_client_key": str(pems["key"]),
            "upstream_verify": False,
        },
    )
    assert settings.upstream_ca_file == tmp_path
    assert settings.upstream_client_key == pems["key"]
    assert settings.upstream_verify is False


ZONE = '[upstream]\nurl = "http://glance:9292"\n[zone]\n'
PEERS = 'peers = ["http://n1:9292", "http://n2:9292/"]\n'
SELF_AND_SECRET = 'self = "http://n2:9292"\nsecret = "0123456789abcdef"\n'


def test_a_zone_of_nodes(tmp_path: Path) -> None:
    config = tmp_path / "edgecache.toml"
    config.write_text(ZONE + PEERS + SELF_AND_SECRET + 'listen = "10.0.0.12:9293"\n')
    settings = load_settings(config, {})
    assert settings.zone_peers == ("http://n1:9292", "http://n2:9292")
    assert settings.siblings == ("http://n1:9292",)
    assert settings.zone_listen == ("10.0.0.12", 9293)


@pytest.mark.parametrize(
    ("zone", "message"),
    [
        (PEERS + 'secret = "0123456789abcdef"\n', r"^zone\.self: required with zone\.peers"),
        (
            PEERS + 'self = "http://n3:9292"\nsecret = "0123456789abcdef"\n',
            r"^zone\.self: http://n3:9292 is not one of zone\.peers",
        ),
        (PEERS + 'self = "http://n1:9292"\n', r"^zone\.secret: required with zone\.peers"),
        (PEERS + 'self = "http://n1:9292"\nsecret = "short"\n', r"^zone\.secret: expected a str"),
        ('peers = ["node1:9292"]\n', r"^zone\.peers: expected an http\(s\) URL"),
        ('peers = "http://n1:9292"\n', r"^zone\.peers: expected a list"),
        ('secret = "0123456789abcdef"\n', r"^zone\.secret: set zone\.peers too"),
        (PEERS + SELF_AND_SECRET, r"^zone\.listen: required with zone\.peers"),
        (PEERS + SELF_AND_SECRET + 'listen = "n2"\n', r"^zone\.listen: expected HOST:PORT"),
        (
            PEERS + SELF_AND_SECRET + 'listen = "127.0.0.1:9292"\n',
            r"^zone\.listen: 127\.0\.0\.1:9292 is the clients' address \(server\.listen\)",
        ),
        (
            PEERS + SELF_AND_SECRET + 'listen = ":9292"\n',
            r"^zone\.listen: 0\.0\.0\.0:9292 is the clients' address",
        ),
        ('listen = "127.0.0.1:9293"\n', r"^zone\.listen: set zone\.peers too"),
    ],
)
def test_a_zone_needs_its_own_address_and_a_secret(tmp_path: Path, zone: str, message: str) -> None:
    config = tmp_path / "edgecache.toml"
    config.write_text(ZONE + zone)
    with pytest.raises(ConfigError, match=message):
        load_settings(config, {})


def zone_over_tls(tmp_path: Path, pems: dict[str, Path], me: str, **files: str) -> Path:
    """A node of a zone whose nodes speak https, with [zone] `files` (key -> a pems name)."""
    lines = [
        ZONE,
        'peers = ["https://n1:9293", "https://n2:9293", "http://n3:9293"]\n',
        f'self = "{me}"\nsecret = "0123456789abcdef"\nlisten = "127.0.0.1:9293"\n',
        *(f'{key} = "{pems.get(name, tmp_path / name)}"\n' for key, name in files.items()),
    ]
    config = tmp_path / "edgecache.toml"
    config.write_text("".join(lines))
    return config


def test_a_zone_over_tls_with_its_own_ca(tmp_path: Path, pems: dict[str, Path]) -> None:
    config = zone_over_tls(
        tmp_path,
        pems,
        "https://n2:9293",
        ca_file="ca",
        tls_cert="cert",
        tls_key="key",
        client_cert="cert",
        client_key="key",
    )
    tls.check(load_settings(config, {}))  # every context builds
    settings = load_settings(config, {})
    assert settings.zone_ca_file == pems["ca"]
    assert (settings.zone_tls_cert, settings.zone_tls_key) == (pems["cert"], pems["key"])
    assert (settings.zone_client_cert, settings.zone_client_key) == (pems["cert"], pems["key"])


@pytest.mark.parametrize(
    ("me", "files", "key", "problem"),
    [
        ("http://n3:9293", {"ca_file": "text"}, "zone.ca_file", "holds no PEM certificate"),
        ("http://n3:9293", {"client_cert": "cert"}, "zone.client_key", "required with"),
        ("http://n3:9293", {"client_key": "key"}, "zone.client_key", "set zone.client_cert"),
        ("https://n2:9293", {"tls_key": "key"}, "zone.tls_key", "set zone.tls_cert too"),
        (
            "https://n2:9293",
            {"tls_cert": "cert", "tls_key": "other_key"},
            "zone.tls_key",
            "cannot be used together",
        ),
        (
            "http://n3:9293",
            {"client_cert": "cert", "client_key": "other_key"},
            "zone.client_key",
            "cannot be used together",
        ),
        ("https://n2:9293", {}, "zone.tls_cert", "required: zone.self is an https URL"),
        (
            "http://n3:9293",
            {"tls_cert": "cert", "tls_key": "key"},
            "zone.self",
            "expected an https URL: zone.tls_cert is set",
        ),
        (
            "https://n2:9293",
            {"tls_cert": "cert", "tls_key": "key", "ca_file": "ca"},
            "zone.client_cert",
            "required with zone.tls_cert and zone.ca_file",
        ),
    ],
)
def test_bad_zone_tls_settings_stop_start_up_with_one_line_naming_the_key(
    tmp_path: Path,
    pems: dict[str, Path],
    capsys: pytest.CaptureFixture[str],
    me: str,
    files: dict[str, str],
    key: str,
    problem: str,
) -> None:
    config = zone_over_tls(tmp_path, pems, me, **files)
    assert main(["serve", "--config", str(config)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1
    assert err[0].startswith(f"edgecache: invalid configuration: {key}: ")
    assert problem in err[0]


def test_zone_tls_settings_need_a_zone(tmp_path: Path, pems: dict[str, Path]) -> None:
    config = tmp_path / "edgecache.toml"
    config.write_text(ZONE + f'ca_file = "{pems["ca"]}"\n')
    with pytest.raises(ConfigError, match=r"^zone\.ca_file: set zone\.peers too"):
        load_settings(config, {})
