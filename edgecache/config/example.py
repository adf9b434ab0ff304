"""The documented example settings file, written from the declarations:

python -m edgecache.config.example > config/edgecache.toml
"""

from __future__ import annotations

import sys
import textwrap

from edgecache.config.catalog import SETTINGS
from edgecache.config.declaration import Section, Setting
from edgecache.config.help import help_of
from edgecache.config.loading import CONFIG_ENV, DEFAULT_CONFIG_PATH
from edgecache.config.sections import SECTIONS

WIDTH = 96
_SUGGESTION_COLUMN = 29  # where `# e.g. ...` starts after a value
_HEADER = (
    "edgecache configuration. Every key is optional except [upstream] url; the flags of "
    "`edgecache serve` override what is written here (a key's comment names its flag). "
    f"Default location: {DEFAULT_CONFIG_PATH}, or the file named by ${CONFIG_ENV}.\n\n"
    "Written from the declarations in edgecache/config/sections/ by "
    "`python -m edgecache.config.example`."
)


def example_file() -> str:
    lines = _comment(_HEADER)
    for section in SECTIONS:
        lines += ["", *_section(section)]
    return "\n".join(lines) + "\n"


def help_text(setting: Setting) -> str:
    """What the example file says of `setting`: its help, its bounds, its flag, its old name."""
    notes = [help_of(setting), setting.kind.note()]
    if setting.flag is not None:
        notes.append(f"Flag: {setting.flag_name}.")
    if setting.formerly is not None:
        section, key = setting.formerly.split(".")
        notes.append(f"Formerly [{section}] {key}, still read (with a warning).")
    return " ".join(note for note in notes if note)


def _section(section: Section) -> list[str]:
    lines = [f"[{section.name}]"]
    if section.intro:
        lines += [*_comment(section.intro), "#"]
    for setting in SETTINGS:
        if setting.section is section:
            lines += [*_comment(help_text(setting)), _assignment(setting)]
    return lines


def _assignment(setting: Setting) -> str:
    value = setting.default if setting.example is None else setting.example
    line = f"{setting.key} = {setting.kind.toml(value)}"
    if setting.suggest is None:
        return line
    return f"{line:<{_SUGGESTION_COLUMN - 1}} # e.g. {setting.kind.toml(setting.suggest)}"


def _comment(text: str) -> list[str]:
    """`text` as comment lines: each paragraph (blank lines part them) wrapped, but for a line
    that starts with spaces (an example, kept as it is)."""
    lines: list[str] = []
    for paragraph in text.split("\n\n"):
        prose: list[str] = []
        for line in [*paragraph.splitlines(), ""]:
            if line.startswith(" ") or not line:
                lines += _wrapped(" ".join(prose))
                lines += [f"# {line}"] if line else []
                prose = []
            else:
                prose.append(line)
    return lines


def _wrapped(prose: str) -> list[str]:
    return textwrap.wrap(
        prose,
        WIDTH,
        initial_indent="# ",
        subsequent_indent="# ",
        break_long_words=False,
        break_on_hyphens=False,
    )


if __name__ == "__main__":
    sys.stdout.write(example_file())
