"""What every command shares: the settings and store opened on first use, the options
declared once (as sqlite-utils' `output_options`), and the helpers that print rows."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar, cast, get_args

import click

from tagger.cli.boundary import mask_secrets
from tagger.cli.output import FORMATS, render
from tagger.config import ModelName, Settings, load_settings
from tagger.labels.names import LANGUAGES, Language
from tagger.store.database import Store

if TYPE_CHECKING:
    from tagger.inference.base import Classifier
    from tagger.query.language import Query

MODEL_NAMES = list(get_args(ModelName))
F = TypeVar("F", bound=Callable[..., Any])


@dataclass
class App:
    """What every command shares: the flags given, and settings/store opened on first use."""

    config_file: Path | None = None
    flags: dict[str, Any] = field(default_factory=dict)
    _settings: Settings | None = None
    _store: Store | None = None

    def settings(self, **more: Any) -> Settings:
        if more or self._settings is None:
            self._settings = load_settings(self.config_file, **(self.flags | more))
        return self._settings

    def store(self, create: bool = False) -> Store:
        """The database, opened once. Only the commands that tag pass `create`: the others
        answer "no database at ..." for a mistyped --db instead of making an empty one."""
        if self._store is None:
            self._store = Store(self.settings().db_url, create=create)
        return self._store

    def database(self) -> str | None:
        """The database URL for an error message; None when the settings are unusable."""
        try:
            return self.settings().db_url
        except Exception:
            return None

    def classifier(self, settings: Settings) -> Classifier:
        from tagger.service import load_classifier

        return load_classifier(settings)

    def language(self, given: str | None) -> Language:
        """--lang if given, else the labels.language setting."""
        return cast(Language, given) if given else self.settings().labels.language

    def min_score(self, given: float | None) -> float:
        """The --min-score given, else the query.min_score setting."""
        return self.settings().query.min_score if given is None else given


pass_app = click.make_pass_decorator(App)


def format_option(
    *choices: str, default: str = "table", help: str | None = None
) -> Callable[[F], F]:
    """`--format` (as `fmt`), with the formats this command can write."""
    return click.option(
        "--format",
        "fmt",
        type=click.Choice(choices or FORMATS),
        default=default,
        show_default=True,
        help=help
        or (
            "table for people; json for scripts"
            if choices == ("table", "json")
            else "table for people; json or csv for programs; paths: one per line"
            " (not safe for names with newlines)"
        ),
    )


def model_options(function: F) -> F:
    """--model and --batch-size, for the commands that tag."""
    function = click.option(
        "--batch-size", type=int, help="images per forward pass; 0 = 4, or 8 for int8 [batch.size]"
    )(function)
    return model_option(function)


model_option = click.option(
    "--model", type=click.Choice(MODEL_NAMES), help="classifier to use [model.name]"
)


lang_option = click.option(
    "--lang",
    type=click.Choice(LANGUAGES),
    help="label names in English or Chinese (zh); JSON and CSV add label_zh [labels.language]",
)


def min_score_option(help: str = "as for `tagger query`") -> Callable[[F], F]:
    return click.option("--min-score", type=click.FloatRange(0, 1), help=help)


def example(*lines: str) -> str:
    """A help epilog that click prints as written."""
    return "\b\nExamples:\n" + "\n".join(f"  {line}" for line in lines)


def overrides(model: str | None, batch_size: int | None) -> dict[str, Any]:
    """The settings that --model and --batch-size replace."""
    changed: dict[str, Any] = {}
    if model:
        changed["model"] = {"name": model}
    if batch_size is not None:
        changed["batch"] = {"size": batch_size}
    return changed


def parse_terms(terms: Sequence[str], app: App | None = None) -> Query:
    """Query terms, with a note on stderr for each label name that means several things.
    With `app`, labels of one's own in its database are known too."""
    from tagger.query.language import parse
    from tagger.service.own import label_resolver

    parsed = parse(terms, resolve=label_resolver(app.store if app else None))
    print_notes(parsed)
    return parsed


def print_notes(parsed: Query) -> None:
    from tagger.query.language import notes

    for note in notes(parsed):
        click.echo(f"note: {note}", err=True)


def masked(value: Any) -> Any:
    """A text with the passwords of its URLs hidden; anything else as it is."""
    return mask_secrets(value) if isinstance(value, str) else value


def print_rows(
    rows: Sequence[dict[str, Any]],
    columns: list[str],
    fmt: str,
    empty: str = "",
    language: Language = "en",
) -> None:
    if not rows and fmt in ("table", "paths"):  # nothing at all for `| xargs`
        if empty:
            click.echo(empty, err=True)
        return
    rows, columns = localised(rows, columns, fmt, language)
    click.echo(render(rows, columns, fmt))


def localised(
    rows: Sequence[dict[str, Any]], columns: list[str], fmt: str, language: Language
) -> tuple[Sequence[dict[str, Any]], list[str]]:
    """In Chinese a table shows the Chinese name in the label column; CSV gets a label_zh
    column beside label (JSON has the key already)."""
    if language != "zh" or "label" not in columns:
        return rows, columns
    if fmt == "table":
        return [row | {"label": row.get("label_zh") or row["label"]} for row in rows], columns
    at = columns.index("label") + 1
    return rows, [*columns[:at], "label_zh", *columns[at:]]
