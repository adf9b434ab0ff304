"""[upstream] max_rate, the uplink budget's setting: a size per second, or "" for no cap."""

from __future__ import annotations

from pathlib import Path

import pytest

from edgecache.config import ConfigError, load_settings


def test_max_rate_is_a_size_per_second_in_upstream(tmp_path: Path) -> None:
    config = tmp_path / "edgecache.toml"
    config.write_text('[upstream]\nurl = "http://glance:9292"\nmax_rate = "12.5MB"\n')
    assert load_settings(config, {}).max_rate == 12_500_000
    config.write_text('[upstream]\nurl = "http://glance:9292"\nmax_rate = ""\n')
    assert load_settings(config, {}).max_rate is None
    for wrong in ('"fast"', '"1KiB"', "true"):
        config.write_text(f'[upstream]\nurl = "http://glance:9292"\nmax_rate = {wrong}\n')
        with pytest.raises(ConfigError, match=r"^upstream\.max_rate: "):
            load_settings(config, {})
