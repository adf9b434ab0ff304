"""`edgecache serve`: its flags come from the settings' declarations."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from edgecache.cli import main, serve
from edgecache.cli.parser import build_parser
from edgecache.config import Settings, load_settings
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


def test_a_former_name_is_logged_once_the_daemon_logs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """The settings are read before logging is set up (they say how to log): the warning
    waits for it, so that it goes where the daemon's log goes, in its format."""
    config = tmp_path / "edgecache.toml"
    config.write_text('[upstream]\nurl = "http://glance:9292"\n[auth]\nreuse_decisions_for = 5\n')
    started: list[Settings] = []
    logged_before_set_up: list[int] = []

    async def run(settings: Settings) -> None:
        started.append(settings)

    monkeypatch.setattr(serve.server, "run", run)
    monkeypatch.setattr(serve, "keep_large_buffers", lambda: True)
    monkeypatch.setattr(
        serve, "configure_logging", lambda *_: logged_before_set_up.append(len(caplog.records))
    )
    with caplog.at_level(logging.WARNING):
        assert main(["serve", "--config", str(config)]) == 0
    assert started[0].reuse_decisions_for == 5.0
    assert logged_before_set_up == [0]
    assert [(r.name, r.getMessage()) for r in caplog.records] == [
        (
            "edgecache.cli.serve",
            "auth.reuse_decisions_for is deprecated: move it to [offline] as "
            "reuse_decisions_for (it is read as that for now)",
        )
    ]
