"""chatbox.toml (DESIGN §8): strict decoding, per-agent overrides, environment, live reload."""

from __future__ import annotations

import os

import pytest

from chatbox.runtime.config import EXAMPLE, ConfigError, ConfigSource, load


def write(tmp_path, text: str):
    path = tmp_path / "chatbox.toml"
    path.write_text(text, encoding="utf-8")
    return path


def test_the_commented_example_decodes_to_the_defaults(tmp_path):
    """DESIGN §8: `chatbox init` writes a commented example that is itself valid."""
    config = load(write(tmp_path, EXAMPLE))
    assert config.limits.max_hops == 6 and config.limits.max_turns_per_hour == 30
    assert config.limits.repeat_threshold == 3 and config.limits.max_turn_seconds == 600


def test_an_absent_file_means_the_defaults(tmp_path):
    """DESIGN §8: precedence ends at the defaults."""
    assert load(tmp_path / "missing.toml").limits.max_hops == 6


@pytest.mark.parametrize("text, named", [
    ("[limits]\nmax_hopz = 3\n", "max_hopz"),
    ("[agents.kimi]\nengin = 'kimi'\n", "engin"),
    ("[surprise]\nx = 1\n", "surprise"),
])
def test_an_unknown_key_is_an_error_naming_it(tmp_path, text, named):
    """DESIGN §8: strict Structs: unknown keys are an error that names the key."""
    with pytest.raises(ConfigError, match=named):
        load(write(tmp_path, text))


@pytest.mark.parametrize("text, named", [
    ("[limits]\nmax_hops = 0\n", "max_hops"),
    ("[limits]\nrepeat_threshold = 1\n", "repeat_threshold"),
    ("[limits]\nmax_turn_seconds = -5\n", "max_turn_seconds"),
    ("[agents.kimi]\nengine = 'gpt'\n", "engine"),
    ("[agents.kimi]\nlimits = { max_hops = -1 }\n", "max_hops"),
    ("[agents.kimi]\nlimits = { max_hopz = 2 }\n", "max_hopz"),
    ("[limits]\nmax_hops = 'six'\n", "max_hops"),
])
def test_an_impossible_value_is_an_error_naming_it(tmp_path, text, named):
    """Issue 4: an impossible value is an error that names it."""
    with pytest.raises(ConfigError, match=named):
        load(write(tmp_path, text))


def test_an_agent_overrides_only_the_limits_it_names(tmp_path):
    """DESIGN §8: [limits] are defaults for every agent; each may override them."""
    config = load(write(tmp_path, "[limits]\nmax_hops = 4\nmax_turns_per_hour = 10\n\n"
                                  "[agents.kimi]\nlimits = { max_hops = 2 }\n"))
    assert config.limits_for("kimi").max_hops == 2
    assert config.limits_for("kimi").max_turns_per_hour == 10
    assert config.limits_for("other").max_hops == 4


def test_the_environment_overrides_the_file(tmp_path, monkeypatch):
    """DESIGN §8: environment (CHATBOX_*) > file."""
    monkeypatch.setenv("CHATBOX_LOG_LEVEL", "DEBUG")
    monkeypatch.setenv("CHATBOX_BUS_REQUEST", "tcp://127.0.0.1:5999")
    config = load(write(tmp_path, "[log]\nlevel = 'error'\n"))
    assert config.log.level == "debug" and config.bus.request == "tcp://127.0.0.1:5999"


def test_a_live_source_applies_an_edit_and_keeps_the_last_good_on_a_broken_one(tmp_path):
    """README: the broker re-reads chatbox.toml when it changes; a broken edit is reported."""
    path = write(tmp_path, "[limits]\nmax_hops = 4\n")
    errors = []
    source = ConfigSource(path, on_error=errors.append)
    assert source.limits_for("kimi").max_hops == 4
    path.write_text("[limits]\nmax_hops = 5\n", encoding="utf-8")
    os.utime(path, ns=(1, 1))  # a distinct stamp, whatever the clock's resolution
    assert source.limits_for("kimi").max_hops == 5
    path.write_text("[limits]\nmax_hops = 0\n", encoding="utf-8")
    assert source.limits_for("kimi").max_hops == 5
    assert errors and "max_hops" in str(errors[0])
