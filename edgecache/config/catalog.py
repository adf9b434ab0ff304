"""Every declared setting, read from the fields of Settings, and the look-ups by attribute and
by `section.key` that loading, the checks and the command line use."""

from __future__ import annotations

from dataclasses import fields, replace

from edgecache.config.declaration import DECLARED, Setting
from edgecache.config.sections import SECTIONS
from edgecache.config.settings import Settings


def _declared() -> list[Setting]:
    declared = []
    for field in fields(Settings):
        setting = field.metadata[DECLARED]  # a field without a declaration fails here, at import
        declared.append(replace(setting, attr=field.name, key=setting.key or field.name))
    return sorted(declared, key=lambda setting: SECTIONS.index(setting.section))


SETTINGS: tuple[Setting, ...] = tuple(_declared())
BY_ATTR = {setting.attr: setting for setting in SETTINGS}
BY_NAME = {setting.name: setting for setting in SETTINGS}
BY_FORMER_NAME = {setting.formerly: setting for setting in SETTINGS if setting.formerly}
# (a certificate, its private key), as each private key declares
TLS_PAIRS = tuple(
    (BY_NAME[f"{setting.section.name}.{setting.pairs_with}"], setting)
    for setting in SETTINGS
    if setting.pairs_with
)
# TOML layout: section -> {toml key -> Settings attribute}
TOML_KEYS = {
    section.name: {s.key: s.attr for s in SETTINGS if s.section is section} for section in SECTIONS
}


def name_of(attr: str) -> str:
    """How messages name the setting held in Settings.`attr`: `section.key`."""
    return BY_ATTR[attr].name
