import tomllib
from pathlib import Path

import pytest

from juno.config import Config, config_from_dict, default_config_text, load_config
from juno.errors import ConfigError


def test_defaults_match_the_spec() -> None:
    th = Config().thresholds
    assert (th.active_days, th.vip_share, th.near_vip_share) == (120, 0.10, 0.15)
    assert (th.min_reorder_pairs, th.lead_days, th.high_value_share) == (30, 14, 0.20)
    assert (th.lapse_multiple, th.lapse_min_days, th.lost_days) == (2.0, 90, 540)
    assert (th.discount_share_min, th.discount_rate_min, th.first_order_min_days) == (0.7, 0.25, 7)
    assert (th.support_window_days, th.cooldown_days, th.min_cohort_size) == (30, 7, 50)
    assert th.margin_coverage_min == 0.05
    assert Config().window_days == 365
    assert Config().precedence[0] == "lapsed_high_value"


def test_default_text_round_trips_to_the_defaults() -> None:
    data = tomllib.loads(default_config_text())
    assert config_from_dict(data) == Config()


def test_unknown_key_suggests_the_closest() -> None:
    with pytest.raises(ConfigError) as e:
        config_from_dict({"thresholds": {"vip_shar": 0.2}})
    assert "thresholds.vip_shar" in str(e.value)
    assert "thresholds.vip_share" in str(e.value)


def test_key_in_the_wrong_table_points_to_its_table() -> None:
    with pytest.raises(ConfigError) as e:
        config_from_dict({"active_days": 90})
    assert "[thresholds]" in str(e.value)


def test_invalid_value_names_the_key() -> None:
    with pytest.raises(ConfigError) as e:
        config_from_dict({"value": "profit"})
    assert "value" in str(e.value)


def test_precedence_must_list_every_cohort() -> None:
    with pytest.raises(ConfigError):
        config_from_dict({"precedence": ["vip"]})


def test_load_config_file_and_bad_toml(tmp_path: Path) -> None:
    p = tmp_path / "juno.toml"
    p.write_text('as_of = 2025-06-30\n[thresholds]\nvip_share = 0.05\n')
    c = load_config(p)
    assert c.thresholds.vip_share == 0.05
    assert str(c.as_of_datetime()) == "2025-06-30 23:59:59"
    p.write_text("as_of = = 1")
    with pytest.raises(ConfigError):
        load_config(p)
    with pytest.raises(ConfigError):
        load_config(tmp_path / "missing.toml")
