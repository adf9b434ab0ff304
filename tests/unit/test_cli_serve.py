"""`edgecache serve`: its flags come from the settings' declarations."""

from __future__ import annotations

from pathlib import Path

import pytest

from edgecache.cli import serve
from edgecache.cli.parser import build_parser
from edgecache.config import load_settings
from edgecache.config.catalog import SETTINGS


def test_serve_has_a_flag_for_each_setting_declared_with_one(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit):
        build_parser().parse_args(["serve", "--help"])
    usage = capsys.readouterr().out
    flagged = [setting for setting in SETTINGS if setting.flag is not None]
    assert {setting.flag_name for setting in flagged} >= {
        "--upstream",
        "--listen",
        "--cache-dir",
        "--max-size",
        "--log-format",
        "--upstream-ca-file",
        "--upstream-client-cert",
        "--upstream-client-key",
        "--upstream-verify",
    }
    for setting in flagged:
        assert f"{setting.flag_name} " in usage
    assert "--listen HOST:PORT" in usage
    assert "(default: 127.0.0.1:9292)" in usage
    assert "--no-upstream-verify" in usage


def test_flags_override_the_file(tmp_path: Path) -> None:
    config = tmp_path / "edgecache.toml"
    config.write_text('[upstream]\nurl = "http://glance:9292"\n[server]\nlisten = "0.0.0.0:9000"\n')
    args = build_parser().parse_args(
        [
            "serve",
            "--upstream",
            "http://primary:9292, http://second:9292,http://third:9292",
            "--listen",
            "127.0.0.2:9393",
            "--max-size",
            "2GiB",
            "--cache-dir",
            str(tmp_path / "cache"),
            "--log-format",
            "json",
            "--no-upstream-verify",
        ]
    )
    settings = load_settings(config, serve.flag_overrides(args))
    assert settings.upstream_urls == (
        "http://primary:9292",
        "http://second:9292",
        "http://third:9292",
    )
    assert (settings.listen_host, settings.listen_port) == ("127.0.0.2", 9393)
    assert settings.max_size == 2 * 2**30
    assert settings.cache_dir == tmp_path / "cache"
    assert settings.log_format == "json"
    assert settings.upstream_verify is False


def test_flags_not_given_leave_the_file_as_it_is(tmp_path: Path) -> None:
    config = tmp_path / "edgecache.toml"
    config.write_text(
        '[upstream]\nurl = "http://glance:9292"\n'
        'fallbacks = ["http://other:9292"]\nverify = false\n'
    )
    args = build_parser().parse_args(["serve"])
    settings = load_settings(config, serve.flag_overrides(args))
    assert settings.upstream_urls == ("http://glance:9292", "http://other:9292")
    assert settings.upstream_verify is False
