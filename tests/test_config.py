"""Configuration: [tool.nncheck] in the nearest pyproject.toml, the setup file's `nncheck` dict, arguments.

Precedence: CLI / API arguments > the setup file's `nncheck` dict > pyproject > defaults. Unknown keys, probe ids
and parameters are errors naming the nearest valid one. Uses only the core probe `initial-loss`.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from nncheck.config import TOP_KEYS, Config, ConfigError, find_pyproject, load_config, validate
from nncheck.registry import registry
from nncheck.runner import config_for
from nncheck.setup import setup_from_kwargs

FULL = """
[tool.nncheck]
only = ["initial-loss"]
skip = []
seed = 3
device = "cpu"
strict = true
budget = "fast"
time_budget_s = 30

[tool.nncheck.probes.initial-loss]
batches = 3
fail_ratio = 3.0
"""


def write(folder: Path, text: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "pyproject.toml").write_text(text)
    return folder


def test_every_key_is_read(tmp_path):
    write(tmp_path, FULL)
    cfg = load_config(tmp_path)
    assert cfg.only == ["initial-loss"] and cfg.skip == []
    assert (cfg.seed, cfg.device, cfg.strict, cfg.budget, cfg.time_budget_s) == (3, "cpu", True, "fast", 30.0)
    assert cfg.probes == {"initial-loss": {"batches": 3, "fail_ratio": 3.0}}
    assert cfg.source == str(tmp_path / "pyproject.toml")


def test_found_by_walking_up_from_the_setup_file(tmp_path):
    write(tmp_path, FULL)
    setup = tmp_path / "models" / "deep" / "setup.py"
    setup.parent.mkdir(parents=True)
    setup.write_text("")
    assert find_pyproject(setup) == tmp_path / "pyproject.toml"
    assert load_config(setup).seed == 3


def test_cwd_is_the_default_start(tmp_path, monkeypatch):
    write(tmp_path, FULL)
    monkeypatch.chdir(tmp_path)
    assert load_config().seed == 3


def test_defaults_without_a_section(tmp_path):
    write(tmp_path, "[project]\nname = 'x'\n")
    cfg = load_config(tmp_path)
    assert cfg == Config()


def test_arguments_beat_pyproject_and_tables_merge_key_by_key(tmp_path):
    write(tmp_path, FULL)
    cfg = load_config(tmp_path, overrides={"seed": 9, "budget": "full", "probes": {"initial-loss": {"batches": 1}}})
    assert (cfg.seed, cfg.budget, cfg.strict) == (9, "full", True)
    assert cfg.probes == {"initial-loss": {"batches": 1, "fail_ratio": 3.0}}


def test_none_and_empty_arguments_do_not_override(tmp_path):
    write(tmp_path, FULL)
    cfg = load_config(tmp_path, overrides={"seed": None, "only": [], "strict": None})
    assert (cfg.seed, cfg.only, cfg.strict) == (3, ["initial-loss"], True)


def test_setup_file_settings_sit_between_pyproject_and_arguments(tmp_path):
    write(tmp_path, FULL)
    base = load_config(tmp_path)
    setup = setup_from_kwargs(
        lambda: None, [], path="m.py", settings={"seed": 5, "probes": {"initial-loss": {"batches": 2}}}
    )
    cfg = config_for(setup, base)
    assert cfg.seed == 5 and cfg.probes["initial-loss"] == {"batches": 2, "fail_ratio": 3.0}
    assert config_for(setup, base, {"seed": 8}).seed == 8
    bad = setup_from_kwargs(lambda: None, [], path="m.py", settings={"skp": ["initial-loss"]})
    with pytest.raises(ConfigError, match=r"m\.py: `nncheck` settings: unknown key `skp`\. Did you mean `skip`\?"):
        config_for(bad, base)


def test_budget_fast_uses_fast_params_and_config_wins():
    p = registry()["initial-loss"]
    info = {i.name: i for i in p.param_info}
    assert p.resolved_params("fast").batches == info["batches"].fast != info["batches"].default
    assert p.resolved_params("fast", {"batches": 7}).batches == 7
    assert p.resolved_params("full").batches == info["batches"].default


def test_selection_only_and_skip():
    ids = ["a", "b", "c"]
    assert Config(only=["c", "a"]).selected(ids) == ["a", "c"]
    assert Config(skip=["b"]).selected(ids, ["a", "b"]) == ["a"]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("sed = 1", r"unknown key `sed`\. Did you mean `seed`\?"),
        ("time_budget = 3", r"unknown key `time_budget`\. Did you mean `time_budget_s`\?"),
        ("budjet = 'fast'", r"Did you mean `budget`\?.*Valid keys: only, skip, seed"),
        ('only = ["initial-los"]', r"unknown probe id `initial-los` in `only`\. Did you mean `initial-loss`\?"),
        ('skip = ["intial-loss"]', r"Did you mean `initial-loss`\?"),
        ("[tool.nncheck.probes.initial-los]\nbatches = 2", r"unknown probe id `initial-los` in `probes`"),
        ("[tool.nncheck.probes.initial-loss]\nbatch = 2", r"has no parameter `batch`\. Did you mean `batches`\?"),
        ("[tool.nncheck.initial-loss]\nbatches = 2", r"\[tool\.nncheck\.probes\.initial-loss\]"),
        ("seed = '3'", r"`seed` must be an integer"),
        ("seed = true", r"`seed` must be an integer"),
        ("strict = 'yes'", r"`strict` must be true or false"),
        ("budget = 'slow'", r"`budget` must be one of full, fast"),
        ("time_budget_s = -1", r"`time_budget_s` must be a positive number"),
        ("only = 3", r"`only` must be a list of probe ids"),
        ("device = 0", r"`device` must be a string"),
        ("[tool.nncheck.probes.initial-loss]\nfail_ratio = 'high'", r"must be a number like its default 2.0"),
        ("[tool.nncheck.probes.initial-loss]\nbatches = true", r"must be an integer like its default 4"),
    ],
)
def test_errors_name_the_key_and_the_nearest_valid_one(tmp_path, text, message):
    body = text if text.startswith("[") else f"[tool.nncheck]\n{text}"
    write(tmp_path, body)
    with pytest.raises(ConfigError, match=message) as e:
        load_config(tmp_path)
    assert str(tmp_path / "pyproject.toml") in str(e.value)


def test_invalid_toml(tmp_path):
    write(tmp_path, "[tool.nncheck\nseed = 1")
    with pytest.raises(ConfigError, match="invalid TOML"):
        load_config(tmp_path)


def test_arguments_are_validated_too(tmp_path):
    write(tmp_path, "[project]\nname = 'x'\n")
    with pytest.raises(ConfigError, match=r"arguments: unknown probe id `nope`"):
        load_config(tmp_path, overrides={"only": ["nope"]})


@given(st.text(alphabet="abcdefghijklmnopqrstuvwxyz_-", min_size=1, max_size=20))
def test_any_unknown_key_is_rejected_by_name(key):
    if key in TOP_KEYS or key in registry():
        return
    with pytest.raises(ConfigError) as e:
        validate({key: 1}, "here")
    assert f"`{key}`" in str(e.value)
