"""Each setting is declared once; the example file, the former names and the messages follow."""

from __future__ import annotations

import logging
import tomllib
from dataclasses import fields
from pathlib import Path

import pytest

from edgecache.config import ConfigError, Settings, load_settings
from edgecache.config.catalog import BY_NAME, SETTINGS
from edgecache.config.declaration import Computed, Setting
from edgecache.config.example import example_file, help_text
from edgecache.config.help import help_of
from edgecache.config.sections import SECTIONS

EXAMPLE = Path(__file__).parents[2] / "config" / "edgecache.toml"
REGENERATE = "python -m edgecache.config.example > config/edgecache.toml"


def test_every_field_of_settings_is_one_declared_setting() -> None:
    assert sorted(s.attr for s in SETTINGS) == sorted(f.name for f in fields(Settings))
    assert len(BY_NAME) == len(SETTINGS)  # no two settings share a section and key
    flags = [s.flag_name for s in SETTINGS if s.flag is not None]
    assert len(set(flags)) == len(flags)


def test_every_setting_has_its_help_under_its_declaration() -> None:
    assert [s.name for s in SETTINGS if not help_of(s)] == []


def test_the_example_file_is_written_from_the_declarations() -> None:
    assert EXAMPLE.read_text() == example_file(), f"the example is stale: run `{REGENERATE}`"


def documented(text: str) -> dict[str, dict[str, tuple[str, str]]]:
    """section -> key -> (its comment, the line that sets it), read from the example's text."""
    sections: dict[str, dict[str, tuple[str, str]]] = {}
    comment: list[str] = []
    for line in text.splitlines():
        if line.startswith("["):
            table = sections.setdefault(line.strip("[]"), {})
            comment = []
        elif line == "#":  # the end of a section's intro
            comment = []
        elif line.startswith("#"):
            comment.append(line.removeprefix("#"))
        elif line:
            key = line.split(" = ")[0]
            table[key] = (words(" ".join(comment)), line)
            comment = []
    return sections


def words(text: str) -> str:
    return " ".join(text.split())


def settings_of(section_name: str) -> list[Setting]:
    return [s for s in SETTINGS if s.section.name == section_name]


def test_the_example_sets_every_declared_key_with_its_help_and_nothing_else() -> None:
    text = EXAMPLE.read_text()
    document, explained = tomllib.loads(text), documented(text)
    assert list(document) == [section.name for section in SECTIONS]
    for name, table in document.items():
        declared = settings_of(name)
        assert list(table) == [s.key for s in declared]
        for setting in declared:
            shown = setting.default if setting.example is None else setting.example
            assert not isinstance(shown, Computed), f"{setting.name} needs an example value"
            assert setting.kind.parse(table[setting.key], setting.name) == shown, setting.name
            comment, line = explained[name][setting.key]
            assert comment == words(help_text(setting)), setting.name
            if setting.suggest is not None:
                assert line.endswith(f"# e.g. {setting.kind.toml(setting.suggest)}")


def test_the_example_names_each_flag_and_former_name() -> None:
    explained = documented(EXAMPLE.read_text())
    for setting in SETTINGS:
        comment, _ = explained[setting.section.name][setting.key]
        if setting.flag is not None:
            assert f"Flag: {setting.flag_name}." in comment
        if setting.formerly is not None:
            section, key = setting.formerly.split(".")
            assert f"Formerly [{section}] {key}" in comment
    assert load_settings(EXAMPLE, {}).upstream == "http://glance.region.example:9292"


def write(tmp_path: Path, text: str) -> Path:
    config = tmp_path / "edgecache.toml"
    config.write_text('[upstream]\nurl = "http://glance:9292"\n' + text)
    return config


def test_a_setting_under_its_former_name_is_read_with_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    config = write(tmp_path, "[auth]\nreuse_decisions_for = 30\n")
    with caplog.at_level(logging.WARNING, logger="edgecache.config"):
        settings = load_settings(config, {})
    assert settings.reuse_decisions_for == 30.0
    assert caplog.messages == [
        "auth.reuse_decisions_for is deprecated: move it to [offline] as reuse_decisions_for "
        "(it is read as that for now)"
    ]


def test_a_setting_under_its_name_is_read_without_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    config = write(tmp_path, "[offline]\nreuse_decisions_for = 30\n")
    with caplog.at_level(logging.WARNING):
        assert load_settings(config, {}).reuse_decisions_for == 30.0
    assert not caplog.messages


def test_a_setting_under_both_names_is_refused(tmp_path: Path) -> None:
    config = write(
        tmp_path, "[offline]\nreuse_decisions_for = 30\n[auth]\nreuse_decisions_for = 5\n"
    )
    message = r"^auth\.reuse_decisions_for: set twice \(also as offline\.reuse_decisions_for\)$"
    with pytest.raises(ConfigError, match=message):
        load_settings(config, {}, warn=lambda _: None)


def test_a_bad_value_under_the_former_name_names_the_key_as_written(tmp_path: Path) -> None:
    config = write(tmp_path, "[auth]\nreuse_decisions_for = -1\n")
    with pytest.raises(ConfigError) as raised:
        load_settings(config, {}, warn=lambda _: None)
    assert str(raised.value) == (
        "auth.reuse_decisions_for: expected a number of seconds >= 0, got -1"
    )


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("read_timeout = 0", "upstream.read_timeout: expected a number of seconds > 0, got 0"),
        (
            "data_connections = true",
            "upstream.data_connections: expected a whole number >= 1, got True",
        ),
        (
            'fallbacks = "http://a,ftp://b"',
            "upstream.fallbacks: expected an http(s) URL, got 'ftp://b'",
        ),
        ("fallbacks = 3", "upstream.fallbacks: expected a list of http(s) URLs"),
        ("ca_file = 1", "upstream.ca_file: expected the path of a PEM file"),
        ('[cache]\nchunk_size = "1KiB"', "cache.chunk_size: must be between 64KiB and 256MiB"),
        (
            '[cache]\nfill_memory = "512KiB"',
            "cache.fill_memory: must be at least 1MiB, got '512KiB'",
        ),
        (
            '[cache]\nmax_size = "big"',
            "cache.max_size: expected a size such as 500MiB, 20GiB or 1.5TB, got 'big'",
        ),
        ("[cache]\nverify_md5 = 1", "cache.verify_md5: expected true or false, got 1"),
        (
            '[server]\nlog_level = "loud"',
            "server.log_level: expected one of debug, info, warning, error, got 'loud'",
        ),
        (
            '[server]\nlog_format = "JSON"',
            "server.log_format: expected one of text, json, got 'JSON'",
        ),
        (
            "[auth]\noffline_download_roles = [1]",
            'auth.offline_download_roles: expected a list of role names, such as ["member"]',
        ),
        (
            '[keystone]\nauth_url = "http://k"\npassword = ""',
            "keystone.password: expected a non-empty string",
        ),
        ('[zone]\nsecret = "short"', "zone.secret: expected a string of at least 16 characters"),
        (
            "[cash]",
            "cash: unknown section (known: upstream, server, offline, auth, keystone, cache, "
            "zone, prefetch)",
        ),
        ("[auth]\nreuse_decisions = 1", "auth.reuse_decisions: unknown setting"),
    ],
)
def test_messages_name_the_key_and_say_what_is_expected(
    tmp_path: Path, text: str, message: str
) -> None:
    with pytest.raises(ConfigError) as raised:
        load_settings(write(tmp_path, text + "\n"), {})
    assert str(raised.value) == message


def test_size_bounds_are_written_in_their_units() -> None:
    assert BY_NAME["cache.chunk_size"].kind.note() == "Between 64KiB and 256MiB."
    assert BY_NAME["cache.fill_memory"].kind.note() == "At least 1MiB."
    assert BY_NAME["cache.max_size"].kind.note() == ""
