"""What every request handler shares: the daemon's store, model, inbox and live status, and
the few decisions the page and the API make alike (query parsing, which file to serve)."""

from __future__ import annotations

import asyncio
import os
import shlex
import stat
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from starlette.requests import Request

from tagger.config import Settings
from tagger.errors import TaggerError
from tagger.labels.names import LANGUAGES, Language
from tagger.query.language import Query, parse
from tagger.records import ModelId
from tagger.store.database import Store
from tagger.store.index import VectorIndex
from tagger.store.reports import present_paths
from tagger.web.metrics import Metrics
from tagger.web.predict import SharedClassifier
from tagger.web.thumbnails import Thumbnails

SHA256_CHARS = frozenset("0123456789abcdef")


class HTTPError(Exception):
    """An answer other than 200, with the one line the client sees."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass
class WebContext:
    settings: Settings
    store: Store
    classifier: SharedClassifier
    inbox: Path
    roots: list[Path]  # watched folders, the inbox among them: nothing outside is served
    thumbnails: Thumbnails
    metrics: Metrics
    status: Callable[[], dict[str, Any]]  # the daemon's live status
    healthy: Callable[[], bool]
    exposed: bool = False  # listening beyond loopback without a password or token
    _real_roots: list[Path] = field(default_factory=list)
    # One upload decoded at a time: what it costs in memory is bounded by web.max_pixels.
    decoding: asyncio.Semaphore = field(default_factory=lambda: asyncio.Semaphore(1))
    # Vector indexes of similar photos, one per model, loaded on first use and kept.
    _indexes: dict[ModelId, VectorIndex] = field(default_factory=dict)

    def mark(self, sha256: str, name: str, positive: bool) -> str:
        """A person's word on a label of their own for this photo: a training example
        (`service.mark_label`); 400 for a name or photo that cannot be one."""
        from tagger.service.own import mark_label

        try:
            return mark_label(self.store, name.strip(), sha256, positive)
        except TaggerError as exc:
            raise HTTPError(400, str(exc)) from None

    def similar(self, sha256: str, limit: int, min_similarity: float) -> list[dict[str, Any]]:
        """The stored photos most like this content (the CLI's `tagger similar`); 404 for
        content not stored or without an embedding yet."""
        from tagger.service.similar import similar, similar_target, vector_index

        try:
            target = similar_target(self.store, sha256)
        except TaggerError as exc:
            raise HTTPError(404, str(exc)) from None
        if target.model not in self._indexes:
            self._indexes[target.model] = vector_index(self.settings, self.store, target.model)
        return similar(self.store, self._indexes[target.model], target, limit, min_similarity)

    def __post_init__(self) -> None:
        self._real_roots = [root.resolve() for root in self.roots]

    @property
    def max_pixels(self) -> int:
        return min(self.settings.scan.max_pixels, self.settings.web.max_pixels)

    def query(self, text: str) -> Query:
        """The CLI's query language; a malformed query is a 400 saying where."""
        from tagger.service.own import label_resolver

        try:
            return parse(shlex.split(text), resolve=label_resolver(lambda: self.store))
        except ValueError as exc:  # shlex: an unclosed quote
            raise HTTPError(400, f"query {text!r}: {exc}") from None
        except TaggerError as exc:
            raise HTTPError(400, str(exc)) from None

    def servable(self, sha256: str) -> Path:
        """A regular file holding this content, inside a watched folder: the request names
        only a hash, never a path, and a symlink out of the folders is never followed."""
        check_sha256(sha256)
        for text, size, mtime_ns in present_paths(self.store, sha256):
            try:
                real = Path(text).resolve(strict=True)
                st = os.stat(real)
            except (OSError, RuntimeError):
                continue
            inside = any(real.is_relative_to(root) for root in self._real_roots)
            unchanged = (st.st_size, st.st_mtime_ns) == (size, mtime_ns)  # still that content
            if inside and stat.S_ISREG(st.st_mode) and unchanged:
                return real
        raise HTTPError(404, "no such image, or none of its files can be served")


def check_sha256(value: str) -> str:
    if len(value) != 64 or not set(value) <= SHA256_CHARS:
        raise HTTPError(404, "not an image id (a SHA-256 in lowercase hex)")
    return value


def context(request: Request) -> WebContext:
    ctx: WebContext = request.app.state.ctx
    return ctx


async def in_thread(function: Callable[..., Any], *args: Any) -> Any:
    """Blocking work (decoding, SQL, files) off the event loop."""
    return await asyncio.to_thread(function, *args)


def language(request: Request) -> Language:
    """`?lang=` (the switch on every page; remembered in a cookie), else the cookie, else
    labels.language."""
    for value in (request.query_params.get("lang"), request.cookies.get("lang")):
        if value in LANGUAGES:
            return value
    return context(request).settings.labels.language


def int_param(request: Request, name: str, default: int, low: int, high: int) -> int:
    raw = request.query_params.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise HTTPError(400, f"{name} must be a whole number, not {raw!r}") from None
    if not low <= value <= high:
        raise HTTPError(400, f"{name} must be from {low} to {high}")
    return value


def score_param(request: Request, default: float) -> float:
    raw = request.query_params.get("min_score")
    if raw is None or raw == "":
        return default
    try:
        value = float(raw)
    except ValueError:
        raise HTTPError(400, f"min_score must be a number, not {raw!r}") from None
    if not 0 <= value <= 1:
        raise HTTPError(400, "min_score must be from 0 to 1")
    return value
