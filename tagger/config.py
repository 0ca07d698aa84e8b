"""Settings: defaults < TOML file < TAGGER_* environment < command-line flags.

This module is the only reader of config files and the environment; the rest of tagger
receives one frozen `Settings` object.
"""

from __future__ import annotations

import os
import tomllib
from pathlib import Path
from typing import Any, Literal

import platformdirs
from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError
from pydantic_settings import (
    BaseSettings,
    EnvSettingsSource,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)
from sqlalchemy.engine import URL, make_url

from tagger.errors import ConfigError

ModelName = Literal["efficientnet_lite0", "resnet18"]
RuntimeSetting = Literal["auto", "torch", "onnxruntime", "openvino"]
PrecisionSetting = Literal["auto", "fp32", "bf16", "int8"]

IMAGE_EXTENSIONS = [
    ".jpg",
    ".jpeg",
    ".jpe",
    ".png",
    ".gif",
    ".webp",
    ".bmp",
    ".tif",
    ".tiff",
    ".avif",
    ".heic",
    ".heif",
]
IGNORE_GLOBS = [
    ".*",  # hidden files and folders: .DS_Store, ._IMG_1.jpg, rsync's .IMG_1.jpg.Xy12Ab
    "@eaDir",  # Synology thumbnails
    "#recycle",
    "Thumbs.db",
    "__MACOSX",
    "*.tmp",
    "*.temp",
    "*.part",
    "*.partial",
    "*.crdownload",
    "*~",
]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ModelSettings(_Section):
    name: ModelName = "efficientnet_lite0"
    weights_path: Path | None = Field(
        default=None, description="a weights file to use instead of the bundled or fetched one"
    )
    threads: int = Field(default=0, ge=0, description="threads for inference; 0 = all cores")
    runtime: RuntimeSetting = Field(
        default="auto", description="what runs the model; auto = the fastest installed"
    )
    precision: PrecisionSetting = Field(
        default="auto", description="auto = int8 where it agrees with fp32, else fp32"
    )


class BatchSettings(_Section):
    # 0: the model's runtime and precision pick it (runtimes.BEST_BATCH, docs/benchmarks.md).
    size: int = Field(
        default=0, ge=0, le=256, description="images per forward pass; 0 = 4, or 8 for int8"
    )
    max_wait: float = Field(
        default=2.0, gt=0, description="seconds a partial batch waits for more images"
    )


class ScanSettings(_Section):
    extensions: list[str] = Field(default_factory=lambda: list(IMAGE_EXTENSIONS))
    ignore: list[str] = Field(default_factory=lambda: list(IGNORE_GLOBS))
    follow_symlinks: bool = False
    decode_workers: int = Field(default=2, ge=1, le=64)
    max_pixels: int = Field(
        default=200_000_000, ge=1, description="larger images are refused (decompression bombs)"
    )
    max_file_size: int = Field(
        default=500_000_000, ge=1, description="bytes; larger files are refused unread"
    )
    decode_memory: int = Field(
        default=256_000_000,
        ge=1_000_000,
        description="bytes all decode workers may hold at once; an image needing more is refused",
    )


class WatchSettings(_Section):
    paths: list[Path] = Field(
        default_factory=list, description="folders `tagger watch` watches when given none"
    )
    observer: Literal["auto", "native", "polling"] = Field(
        default="auto",
        description="auto: inotify, or polling on network/FUSE mounts and when inotify is full",
    )
    poll_interval: float = Field(default=10.0, gt=0, description="seconds between polls")
    stability_delay: float = Field(
        default=2.0, ge=0, description="seconds a file must stay unchanged before it is read"
    )
    rescan_interval: float = Field(
        default=300.0,
        ge=0,
        description="seconds between full rescans that catch missed events; 0 = off",
    )
    max_pending: int = Field(
        default=10_000, ge=1, description="files waiting to settle; beyond this a rescan takes over"
    )


class QuerySettings(_Section):
    min_score: float = Field(
        default=0.1, ge=0, le=1, description="tags below this score are left out of answers"
    )


class LabelSettings(_Section):
    """Which labels are stored when an image is tagged (names or wnids; see labels/hierarchy.py)."""

    derived: bool = Field(
        default=True, description="also store WordNet ancestors of the model's classes (dog)"
    )
    min_score: float = Field(
        default=0.2, ge=0, le=1, description="summed score a derived label needs to be stored"
    )
    min_scores: dict[str, float] = Field(
        default_factory=dict, description="per-label minimum scores, for any label"
    )
    hide: list[str] = Field(
        default_factory=lambda: ["entity", "physical entity", "abstraction", "object", "whole"],
        description="labels never stored",
    )
    language: Literal["en", "zh"] = Field(
        default="en", description="label names shown: English, or Chinese (zh); queries take both"
    )


class XmpSettings(_Section):
    """XMP sidecars with tagger's labels, for other photo apps (off unless set)."""

    write: Literal["off", "mirror", "beside"] = Field(
        default="off",
        description="mirror: in xmp.dir, a tree like the photo folders; beside: next to photos",
    )
    dir: Path | None = Field(default=None, description="mirror's root; default: xmp/ in data_dir")
    adobe_names: bool = Field(
        default=False, description="beside: photo.xmp (Adobe) instead of photo.jpg.xmp"
    )
    min_score: float = Field(default=0.2, ge=0, le=1, description="labels below are left out")
    language: Literal["", "en", "zh"] = Field(
        default="", description="keyword language; empty: labels.language"
    )


class WebSettings(_Section):
    """The web page and HTTP API that `tagger watch --listen` serves (off unless set)."""

    listen: str = Field(
        default="", description="HOST:PORT, or a bare PORT on loopback only; empty = no server"
    )
    inbox: Path | None = Field(
        default=None, description="where uploads are written; default: inbox/ in data_dir"
    )
    password: SecretStr | None = Field(default=None, description="HTTP basic auth password")
    password_file: Path | None = Field(default=None, description="a file holding the password")
    token: SecretStr | None = Field(default=None, description="bearer token for API clients")
    token_file: Path | None = Field(default=None, description="a file holding the token")
    max_upload_bytes: int = Field(default=50_000_000, ge=1, description="bytes a photo may have")
    max_request_bytes: int = Field(
        default=200_000_000, ge=1, description="bytes one request may send, all files together"
    )
    max_pixels: int = Field(
        default=60_000_000,
        ge=1,
        description="larger uploads are refused: a small file can decode to gigabytes",
    )
    allowed_hosts: list[str] = Field(
        default_factory=list,
        description="Host names the page answers to; default: loopback names on loopback, any",
    )
    thumbnail_cache_bytes: int = Field(
        default=256_000_000, ge=1_000_000, description="disk the thumbnail cache may use"
    )

    def secret(self, name: Literal["password", "token"]) -> str | None:
        """The password or token, from the setting (env, config) or else its file."""
        value: SecretStr | None = getattr(self, name)
        if value is not None:
            return value.get_secret_value() or None
        file: Path | None = getattr(self, f"{name}_file")
        if file is None:
            return None
        try:
            return file.read_text().strip() or None
        except OSError as exc:
            raise ConfigError(f"web.{name}_file {file}: {exc.strerror}") from None


class Settings(BaseSettings):
    """Every setting tagger has; `config.example.toml` documents each one."""

    model_config = SettingsConfigDict(
        env_prefix="TAGGER_", env_nested_delimiter="__", extra="forbid", frozen=True
    )

    db: str = Field(default="", description="database path or SQLAlchemy URL; default: data_dir")
    data_dir: Path = Field(default_factory=lambda: platformdirs.user_data_path("tagger"))
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field(
        default="INFO", description="what `tagger watch` logs; other commands: warnings, or -v"
    )
    model: ModelSettings = ModelSettings()
    batch: BatchSettings = BatchSettings()
    scan: ScanSettings = ScanSettings()
    watch: WatchSettings = WatchSettings()
    query: QuerySettings = QuerySettings()
    labels: LabelSettings = LabelSettings()
    web: WebSettings = WebSettings()
    xmp: XmpSettings = XmpSettings()

    @property
    def db_url(self) -> str:
        """`db` if it is a URL, else the SQLite URL of the path. SQLAlchemy builds it, so
        that a path stays a path: in a hand-made URL `what?.db` would be the file `what`
        with a query string, and `pct%41.db` the file `pctA.db`."""
        if "://" in self.db:
            return self.db
        path = (Path(self.db).expanduser() if self.db else self.data_dir / "tagger.db").absolute()
        try:
            url = URL.create("sqlite", database=str(path)).render_as_string(hide_password=False)
        except UnicodeEncodeError:
            raise ConfigError(f"database path {path!r} is not valid UTF-8; rename it") from None
        if make_url(url).database != str(path):  # never open some other file instead
            raise ConfigError(f"database path {path!r} cannot be written as a URL; rename it")
        return url


def default_config_file() -> Path:
    return platformdirs.user_config_path("tagger") / "config.toml"


def _config_file(explicit: Path | None) -> Path | None:
    """The TOML file to read: --config, else TAGGER_CONFIG, else the user's one if present."""
    named = explicit or (
        Path(os.environ["TAGGER_CONFIG"]) if os.environ.get("TAGGER_CONFIG") else None
    )
    if named is not None:
        if not named.is_file():
            raise ConfigError(f"config file not found: {named}")
        return named
    fallback = default_config_file()
    return fallback if fallback.is_file() else None


def _sources(config_file: Path | None) -> list[tuple[str, PydanticBaseSettingsSource]]:
    """The sources in falling priority, each with the name `config show` gives it."""
    sources: list[tuple[str, PydanticBaseSettingsSource]] = [("env", EnvSettingsSource(Settings))]
    if config_file is not None:
        sources.append(
            (str(config_file), TomlConfigSettingsSource(Settings, toml_file=config_file))
        )
    return sources


def load_settings(config_file: Path | None = None, **overrides: Any) -> Settings:
    """Build the effective settings; `overrides` are command-line flags (None = not given)."""
    file = _config_file(config_file)
    flags = {k: v for k, v in overrides.items() if v is not None}
    try:
        sources = _sources(file)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{file}: not valid TOML: {exc}") from None

    class _Layered(Settings):
        @classmethod
        def settings_customise_sources(
            cls,
            settings_cls: type[BaseSettings],
            init_settings: PydanticBaseSettingsSource,
            env_settings: PydanticBaseSettingsSource,
            dotenv_settings: PydanticBaseSettingsSource,
            file_secret_settings: PydanticBaseSettingsSource,
        ) -> tuple[PydanticBaseSettingsSource, ...]:
            return (init_settings, *(source for _, source in sources))

    try:
        layered = _Layered(**flags)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc'])}: {err['msg']}" for err in exc.errors()
        )
        raise ConfigError(f"invalid settings: {problems}") from None
    return Settings.model_validate(layered.model_dump())


def _flatten(data: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in data.items():
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def explain(
    settings: Settings, config_file: Path | None = None, **overrides: Any
) -> list[tuple[str, Any, str]]:
    """Each setting as (dotted name, value, where it came from) for `tagger config show`."""
    given = [("flag", _flatten({k: v for k, v in overrides.items() if v is not None}))]
    given += [(name, _flatten(source())) for name, source in _sources(_config_file(config_file))]
    rows = []
    for key, value in _flatten(settings.model_dump(mode="json")).items():
        origin = next((name for name, values in given if key in values), "default")
        rows.append((key, value, origin))
    return rows
