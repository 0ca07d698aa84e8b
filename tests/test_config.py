from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from tagger.config import load_settings
from tagger.errors import ConfigError
from tests.helpers import ROOT, Result

CONFIG = """
data_dir = "/srv/tagger"
[batch]
size = 8
max_wait = 5.0
[model]
threads = 2
"""


def test_layers_default_file_env_flag(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    file = tmp_path / "tagger.toml"
    file.write_text(CONFIG)
    monkeypatch.setenv("TAGGER_BATCH__SIZE", "4")
    monkeypatch.setenv("TAGGER_DB", "/env/tagger.db")
    settings = load_settings(file, db="/flag/tagger.db")
    assert settings.batch.size == 4  # env beats file
    assert settings.batch.max_wait == 5.0  # file beats default, nested keys merge
    assert settings.model.threads == 2 and settings.model.name == "efficientnet_lite0"
    assert settings.db_url == "sqlite:////flag/tagger.db"  # flag beats env
    assert load_settings(file).db_url == "sqlite:////env/tagger.db"


def test_default_database_is_in_the_user_data_directory(tmp_path: Path) -> None:
    assert load_settings().db_url == f"sqlite:///{tmp_path / 'xdg-data' / 'tagger' / 'tagger.db'}"


def test_config_from_env_var_and_errors(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    file = tmp_path / "c.toml"
    file.write_text("[batch]\nsize = -1\n")
    monkeypatch.setenv("TAGGER_CONFIG", str(file))
    with pytest.raises(
        ConfigError, match=r"batch.size: Input should be greater than or equal to 0"
    ):
        load_settings()
    file.write_text("[batch\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_settings()
    file.write_text("[modle]\nname = 'x'\n")
    with pytest.raises(ConfigError, match="modle"):
        load_settings()
    with pytest.raises(ConfigError, match="config file not found"):
        load_settings(tmp_path / "missing.toml")


def test_config_show_says_where_each_value_came_from(
    tagger: Callable[..., Result], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    file = tmp_path / "tagger.toml"
    file.write_text(CONFIG)
    monkeypatch.setenv("TAGGER_BATCH__SIZE", "4")
    result = tagger("--config", str(file), "config", "show", "--format", "json")
    import json

    rows = {row["setting"]: (row["value"], row["source"]) for row in json.loads(result.out)}
    assert rows["batch.size"] == (4, "env")
    assert rows["batch.max_wait"] == (5.0, str(file))
    assert rows["db"][1] == "flag"  # the test harness passes --db
    assert rows["model.name"] == ("efficientnet_lite0", "default")


def test_config_show_hides_database_passwords(capsys: pytest.CaptureFixture[str]) -> None:
    from tagger.cli.main import main

    with pytest.raises(SystemExit):
        main(["--db", "postgresql://tagger:s3cret@db/tagger", "config", "show"])
    out = capsys.readouterr().out
    assert "s3cret" not in out and "postgresql://tagger:***@db/tagger" in out


def test_example_config_documents_every_setting_with_its_default() -> None:
    import tomllib

    from tagger.config import Settings

    example = ROOT / "config.example.toml"
    documented = tomllib.loads(example.read_text())
    defaults = Settings().model_dump(mode="json")
    del defaults["data_dir"]  # platform-specific: documented in a comment
    del defaults["model"]["weights_path"]  # no value by default: documented in a comment
    for unset in ("inbox", "password", "password_file", "token", "token_file"):
        del defaults["web"][unset]  # the same
    del defaults["xmp"]["dir"]  # the same
    assert documented == defaults
