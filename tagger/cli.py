"""The `tagger` command. The one place that turns a TaggerError into `error: ...` and exit 1."""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, get_args

import click
from sqlalchemy.engine import make_url
from tqdm import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm

from tagger import __version__
from tagger.config import ModelName, Settings, explain, load_settings
from tagger.errors import SkipFile, TaggerError
from tagger.files import PhotoFilter, walk
from tagger.output import FORMATS, render
from tagger.records import Outcome
from tagger.store import Store, make_engine, schema_revisions, upgrade

if TYPE_CHECKING:
    from tagger.runtimes import Classifier

# Model runtimes take seconds to import: only the commands that run a model pay for them.
MODEL_NAMES = list(get_args(ModelName))

log = logging.getLogger("tagger")


@dataclass
class App:
    """What every command shares: the flags given, and settings/store opened on first use."""

    config_file: Path | None
    flags: dict[str, Any] = field(default_factory=dict)
    _settings: Settings | None = None
    _store: Store | None = None

    def settings(self, **more: Any) -> Settings:
        if more or self._settings is None:
            self._settings = load_settings(self.config_file, **(self.flags | more))
        return self._settings

    def store(self) -> Store:
        if self._store is None:
            self._store = Store(self.settings().db_url)
        return self._store

    def classifier(self, settings: Settings) -> Classifier:
        from tagger.runtimes import load_classifier

        model = settings.model
        return load_classifier(
            model.name,
            settings.data_dir,
            model.weights_path,
            model.threads,
            model.runtime,
            model.precision,
        )


pass_app = click.make_pass_decorator(App)
format_option = click.option(
    "--format",
    "fmt",
    type=click.Choice(FORMATS),
    default="table",
    show_default=True,
    help="table for people; json, csv or bare paths for other programs",
)


def example(*lines: str) -> str:
    """A help epilog that click prints as written."""
    return "\b\nExamples:\n" + "\n".join(f"  {line}" for line in lines)


@click.group(
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
    epilog=example(
        "tagger scan ~/Pictures", "tagger query --label cat", "tagger --db /data/tagger.db errors"
    ),
)
@click.option(
    "--config",
    "config_file",
    type=click.Path(dir_okay=False, path_type=Path),
    help="TOML settings file [env: TAGGER_CONFIG; default: ~/.config/tagger/config.toml]",
)
@click.option("--db", help="database path or SQLAlchemy URL [env: TAGGER_DB]")
@click.option("-v", "--verbose", is_flag=True, help="log every file, not only problems")
@click.option("--debug", is_flag=True, help="show tracebacks and debug logs")
@click.version_option(__version__, prog_name="tagger")
@click.pass_context
def cli(
    ctx: click.Context, config_file: Path | None, db: str | None, verbose: bool, debug: bool
) -> None:
    """Tag photos offline with an ImageNet classifier, and find them again by label.

    Tags live in a SQLite database (default: tagger.db in your data directory). Nothing
    leaves this machine: the default model's weights are installed with tagger.
    """
    level = "DEBUG" if debug else "INFO" if verbose else None
    ctx.obj = App(config_file, {"db": db, "log_level": level})
    logging.basicConfig(
        level=getattr(logging, level or "WARNING"),
        stream=sys.stderr,
        force=True,
        format="%(levelname)s %(message)s" if debug else "%(message)s",
    )


@cli.command(
    epilog=example(
        "tagger scan ~/Pictures /mnt/nas/photos",
        "tagger scan --model resnet18 --batch-size 32 ~/Pictures",
    )
)
@click.argument("folders", nargs=-1, required=True, type=click.Path(exists=True, path_type=Path))
@click.option("--model", type=click.Choice(MODEL_NAMES), help="classifier to use [model.name]")
@click.option("--batch-size", type=int, help="images per forward pass [batch.size]")
@pass_app
def scan(app: App, folders: tuple[Path, ...], model: str | None, batch_size: int | None) -> None:
    """Tag every new or changed image under FOLDERS (files work too).

    Unchanged files are skipped without reading them; identical content is classified once
    and every path to it is recorded. Files that cannot be read are listed by `tagger errors`.
    """
    overrides: dict[str, Any] = {}
    if model:
        overrides["model"] = {"name": model}
    if batch_size:
        overrides["batch"] = {"size": batch_size}
    settings = app.settings(**overrides)
    store = app.store()
    paths = list(walk(folders, PhotoFilter(settings.scan), settings.scan.follow_symlinks))
    started = time.monotonic()
    with (
        tqdm(
            total=len(paths), unit="file", disable=not sys.stderr.isatty(), dynamic_ncols=True
        ) as bar,
        logging_redirect_tqdm(),
    ):

        def report(path: str, outcome: Outcome) -> None:
            bar.update()
            log.info("%s %s", outcome.value, path)

        from tagger.pipeline import Pipeline

        pipeline = Pipeline(settings, store, app.classifier(settings), report)
        summary = pipeline.run(paths)
    click.echo(f"Scanned {summary} in {time.monotonic() - started:.1f}s.")
    if summary.counts[Outcome.FAILED]:
        click.echo("See `tagger errors` for why files failed.", err=True)


@cli.command(
    epilog=example(
        "tagger query --label alp",
        "tagger query --label cat --min-score 0.5",
        "tagger query --label hotdog --format paths | xargs ls -l",
    )
)
@click.option("--label", required=True, help="an ImageNet label, or a word in one ('cat')")
@click.option("--min-score", type=click.FloatRange(0, 1), help="[default: query.min_score, 0.1]")
@click.option("--limit", type=click.IntRange(1), help="at most this many files")
@format_option
@pass_app
def query(app: App, label: str, min_score: float | None, limit: int | None, fmt: str) -> None:
    """Find files by label, best matches first.

    A word matches every label that contains it as a word: `cat` finds labels such as
    "tiger cat" and "Persian cat"; give the full label to match just that one.
    """
    settings = app.settings()
    from tagger.labels import imagenet_labels
    from tagger.query import by_label, resolve_label

    classes = resolve_label(label, imagenet_labels())
    threshold = settings.query.min_score if min_score is None else min_score
    rows = by_label(app.store(), classes, threshold, limit)
    _print(
        rows,
        ["path", "label", "score"],
        fmt,
        empty=f"no files tagged {label!r} at {threshold} or more",
    )


@cli.command(epilog=example("tagger show ~/Pictures/cat.jpg", "tagger show --format json cat.jpg"))
@click.argument("path", type=click.Path(path_type=Path))
@click.option(
    "--format", "fmt", type=click.Choice(["table", "json"]), default="table", show_default=True
)
@pass_app
def show(app: App, path: Path, fmt: str) -> None:
    """Show the tags and details stored for one file."""
    from tagger.query import file_report

    report = file_report(app.store(), str(path.absolute()))
    if report is None:
        raise TaggerError(f"{path} is not in the database; run `tagger scan` on its folder")
    if fmt == "json":
        click.echo(json.dumps(report, indent=2, ensure_ascii=False))
        return
    click.echo(report["path"])
    for key in ("status", "error", "format", "width", "height", "model", "tagged_at", "sha256"):
        if report.get(key) is not None:
            click.echo(f"  {key}: {report[key]}")
    if report["tags"]:
        click.echo(render(report["tags"], ["rank", "label", "score"], "table"))


@cli.command(
    epilog=example(
        "tagger labels",
        "tagger labels --min-score 0.5 --format csv",
        "tagger labels --all | grep -i terrier",
    )
)
@click.option("--min-score", type=click.FloatRange(0, 1), help="[default: query.min_score, 0.1]")
@click.option("--all", "all_labels", is_flag=True, help="list all 1000 labels the model knows")
@format_option
@pass_app
def labels(app: App, min_score: float | None, all_labels: bool, fmt: str) -> None:
    """Count files per label, most common first."""
    if all_labels:
        from tagger.labels import imagenet_labels

        rows = [{"class_index": i, "label": name} for i, name in enumerate(imagenet_labels())]
        _print(rows, ["class_index", "label"], fmt)
        return
    from tagger.query import label_counts

    threshold = app.settings().query.min_score if min_score is None else min_score
    _print(label_counts(app.store(), threshold), ["label", "files"], fmt, empty="no tags yet")


@cli.command(epilog=example("tagger duplicates", "tagger duplicates --format json"))
@click.option(
    "--format", "fmt", type=click.Choice(["table", "json"]), default="table", show_default=True
)
@pass_app
def duplicates(app: App, fmt: str) -> None:
    """List groups of paths that hold identical content."""
    from tagger.query import duplicate_groups

    groups = duplicate_groups(app.store())
    if fmt == "json":
        click.echo(json.dumps(groups, indent=2, ensure_ascii=False))
    elif not groups:
        click.echo("no duplicates", err=True)
    for group in groups if fmt == "table" else []:
        click.echo(f"{group['sha256'][:12]}  {len(group['paths'])} copies")
        for path in group["paths"]:
            click.echo(f"  {path}")


@cli.command(epilog=example("tagger errors", "tagger errors --format csv > failed.csv"))
@format_option
@pass_app
def errors(app: App, fmt: str) -> None:
    """List files that could not be tagged, and why."""
    from tagger.query import failures

    _print(failures(app.store()), ["path", "reason"], fmt, empty="no failed files")


@cli.command(
    epilog=example("tagger predict photo.jpg", "tagger predict --top-k 5 --format json *.jpg")
)
@click.argument("files", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--top-k", type=click.IntRange(1, 1000), default=3, show_default=True)
@click.option("--model", type=click.Choice(MODEL_NAMES), help="classifier to use [model.name]")
@click.option(
    "--format", "fmt", type=click.Choice(["table", "json"]), default="table", show_default=True
)
@pass_app
def predict(app: App, files: tuple[Path, ...], top_k: int, model: str | None, fmt: str) -> None:
    """Classify FILES and print the top labels, without storing anything."""
    from tagger.decode import decode
    from tagger.hashing import hash_file, stat_file

    settings = app.settings(**({"model": {"name": model}} if model else {}))
    classifier = app.classifier(settings)
    results: list[dict[str, Any]] = []
    failed = 0
    for path in files:
        try:
            image = decode(
                hash_file(stat_file(str(path))), classifier.spec.geometry, settings.scan.max_pixels
            )
        except SkipFile as skip:
            click.echo(f"error: {path}: {skip.reason}", err=True)
            failed += 1
            continue
        tags = classifier.classify(image.pixels[None], top_k)[0]
        results.append(
            {
                "path": str(path),
                "tags": [
                    {"label": t.label, "class_index": t.class_index, "score": round(t.score, 4)}
                    for t in tags
                ],
            }
        )
    if fmt == "json":
        click.echo(json.dumps(results, indent=2, ensure_ascii=False))
    else:
        for result in results:
            click.echo(result["path"])
            for rank, tag in enumerate(result["tags"], 1):
                click.echo(f"  {rank}. {tag['label']:<30} {tag['score']:.3f}")
    if failed:
        sys.exit(1)


@cli.group(epilog=example("tagger model list", "tagger model fetch resnet18"))
def model() -> None:
    """Models tagger can use, and their weights."""


@model.command("list", epilog=example("tagger model list"))
@pass_app
def model_list(app: App) -> None:
    """Show each model, whether its weights are here, and which one is in use."""
    from tagger.specs import MODELS, weights_file

    settings = app.settings()
    rows = []
    for spec in MODELS.values():
        override = settings.model.weights_path if spec.name == settings.model.name else None
        path = weights_file(spec, settings.data_dir, override)
        rows.append(
            {
                "model": spec.name,
                "in_use": "*" if spec.name == settings.model.name else "",
                "weights": "present" if path.is_file() else "missing",
                "path": str(path),
                "about": spec.summary,
            }
        )
    click.echo(render(rows, ["model", "in_use", "weights", "path", "about"], "table"))


@model.command(
    "fetch",
    epilog=example(
        "tagger model fetch resnet18", "tagger --config /etc/tagger.toml model fetch resnet18"
    ),
)
@click.argument("name", type=click.Choice(MODEL_NAMES))
@pass_app
def model_fetch(app: App, name: str) -> None:
    """Download a model's weights once (hash-checked) into the data directory.

    This is the only command that uses the network. The default model needs nothing:
    its weights are installed with tagger.
    """
    from tagger.model import fetch, spec_for

    spec = spec_for(name)
    path = fetch(name, app.settings().data_dir)
    verb = "is bundled at" if spec.fetch_url is None else "saved to"
    click.echo(f"{name}: weights {verb} {path}")


@model.command(
    "prepare",
    epilog=example(
        "tagger model prepare", "TAGGER_MODEL__RUNTIME=onnxruntime tagger model prepare"
    ),
)
@pass_app
def model_prepare(app: App) -> None:
    """Export the model for the configured runtime and precision now, not at the first scan.

    ONNX Runtime and OpenVINO load an artefact exported from torch once, into
    <data_dir>/artefacts/; this builds it (if missing) and checks that it loads.
    """
    settings = app.settings()
    classifier = app.classifier(settings)
    click.echo(
        f"{settings.model.name}: ready on {type(classifier).__name__}"
        f" (model.runtime = {settings.model.runtime}, model.precision = "
        f"{settings.model.precision})"
    )


@cli.group(epilog=example("tagger db upgrade", "tagger db status"))
def db() -> None:
    """The database schema."""


@db.command(
    "upgrade", epilog=example("tagger db upgrade", "tagger --db /data/tagger.db db upgrade")
)
@pass_app
def db_upgrade(app: App) -> None:
    """Migrate the database schema to this tagger's version (back the file up first)."""
    engine = make_engine(app.settings().db_url)
    before, after = upgrade(engine)
    click.echo(
        f"schema {before or 'empty'} -> {after}"
        if before != after
        else f"schema {after} is current"
    )


@db.command("status", epilog=example("tagger db status"))
@pass_app
def db_status(app: App) -> None:
    """Show the database location and whether its schema is current."""
    url = app.settings().db_url
    current, head = schema_revisions(make_engine(url))
    state = (
        "current"
        if current == head
        else "empty"
        if current is None
        else "needs `tagger db upgrade`"
    )
    click.echo(f"{_masked(url)}\nschema {current or '-'} (this tagger: {head}): {state}")


@cli.group(epilog=example("tagger config show"))
def config() -> None:
    """Settings and where they come from."""


@config.command(
    "show", epilog=example("tagger config show", "TAGGER_BATCH__SIZE=32 tagger config show")
)
@format_option
@pass_app
def config_show(app: App, fmt: str) -> None:
    """Print the effective settings and where each came from (flag, env, file, default)."""
    settings = app.settings()
    rows = [
        {"setting": key, "value": _masked(value) if key == "db" else value, "source": origin}
        for key, value, origin in explain(settings, app.config_file, **app.flags)
    ]
    rows.insert(1, {"setting": "(db url)", "value": _masked(settings.db_url), "source": "derived"})
    _print(rows, ["setting", "value", "source"], fmt)


def _masked(url: Any) -> Any:
    if isinstance(url, str) and "://" in url:
        return make_url(url).render_as_string(hide_password=True)
    return url


def _print(rows: Sequence[dict[str, Any]], columns: list[str], fmt: str, empty: str = "") -> None:
    if not rows and fmt == "table":
        if empty:
            click.echo(empty, err=True)
        return
    click.echo(render(rows, columns, fmt))


def main(argv: Sequence[str] | None = None) -> None:
    """Entry point: one line per error, exit 1; tracebacks only with --debug."""
    args = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in args or os.environ.get("TAGGER_DEBUG") == "1"
    try:
        result = cli.main(args=args, prog_name="tagger", standalone_mode=False)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except (click.Abort, KeyboardInterrupt):
        click.echo("interrupted", err=True)
        sys.exit(130)
    except TaggerError as exc:
        if debug:
            raise
        click.echo(f"error: {exc}", err=True)
        sys.exit(1)
    except Exception as exc:
        if debug:
            raise
        click.echo(f"error: {type(exc).__name__}: {exc} (run with --debug for details)", err=True)
        sys.exit(1)
    sys.exit(result if isinstance(result, int) else 0)
