"""The `tagger` command. The one place that turns a TaggerError into `error: ...` and exit 1."""

from __future__ import annotations

import json
import logging
import os
import signal
import sys
import threading
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
from tagger.files import PhotoFilter, printable, walk_and_sweep
from tagger.output import FORMATS, render
from tagger.records import Outcome
from tagger.search import SORTS
from tagger.store import Store, make_engine, schema_revisions, upgrade
from tagger.threads import fewer_malloc_arenas

if TYPE_CHECKING:
    from tagger.querylang import Query
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
        from tagger.hierarchy import LabelRules
        from tagger.runtimes import load_classifier

        model, labels = settings.model, settings.labels
        return load_classifier(
            model.name,
            settings.data_dir,
            model.weights_path,
            model.threads,
            model.runtime,
            model.precision,
            LabelRules.from_names(labels.derived, labels.min_score, labels.min_scores, labels.hide),
            settings.batch.size,
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
model_option = click.option(
    "--model", type=click.Choice(MODEL_NAMES), help="classifier to use [model.name]"
)
batch_size_option = click.option(
    "--batch-size", type=int, help="images per forward pass; 0 = 4, or 8 for int8 [batch.size]"
)


def example(*lines: str) -> str:
    """A help epilog that click prints as written."""
    return "\b\nExamples:\n" + "\n".join(f"  {line}" for line in lines)


@click.group(
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
    epilog=example(
        "tagger watch /srv/photos",
        "tagger scan ~/Pictures",
        "tagger query --label cat",
        "tagger --db /data/tagger.db status",
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
    if not debug:  # migration chatter is not news
        logging.getLogger("alembic").setLevel(logging.WARNING)


@cli.command(
    epilog=example(
        "tagger scan ~/Pictures /mnt/nas/photos",
        "tagger scan --model resnet18 --batch-size 32 ~/Pictures",
    )
)
@click.argument("folders", nargs=-1, required=True, type=click.Path(exists=True, path_type=Path))
@model_option
@batch_size_option
@pass_app
def scan(app: App, folders: tuple[Path, ...], model: str | None, batch_size: int | None) -> None:
    """Tag every new or changed image under FOLDERS (files work too).

    Unchanged files are skipped without reading them; identical content is classified once
    and every path to it is recorded. Files that cannot be read are listed by `tagger errors`.
    """
    settings = app.settings(**_overrides(model, batch_size))
    store = app.store()
    items = list(walk_and_sweep(folders, PhotoFilter(settings.scan), settings.scan.follow_symlinks))
    started = time.monotonic()
    with (
        tqdm(
            total=sum(isinstance(item, Path) for item in items),
            unit="file",
            disable=not sys.stderr.isatty(),
            dynamic_ncols=True,
        ) as bar,
        logging_redirect_tqdm(),
    ):

        def report(path: str, outcome: Outcome) -> None:
            bar.update()
            log.info("%s %s", outcome.value, printable(path))

        from tagger.pipeline import Pipeline

        pipeline = Pipeline(settings, store, app.classifier(settings), report)
        summary = pipeline.run(items)
    click.echo(f"Scanned {summary} in {time.monotonic() - started:.1f}s.")
    if summary.counts[Outcome.FAILED]:
        click.echo("See `tagger errors` for why files failed.", err=True)


@cli.command(
    epilog=example(
        "tagger watch /app/uploads",
        "tagger watch --observer polling /mnt/nas/photos   # NFS/SMB shares",
        "TAGGER_DB=/data/tagger.db tagger watch ~/Pictures",
    )
)
@click.argument("folders", nargs=-1, type=click.Path(file_okay=False, path_type=Path))
@click.option(
    "--observer",
    type=click.Choice(["auto", "native", "polling"]),
    help="how changes are noticed [watch.observer, default auto]",
)
@model_option
@batch_size_option
@pass_app
def watch(
    app: App,
    folders: tuple[Path, ...],
    observer: str | None,
    model: str | None,
    batch_size: int | None,
) -> None:
    """Tag what is already in FOLDERS, then every image that arrives, until stopped.

    First a reconcile tags whatever changed while tagger was not running (unchanged files
    are not read again), then files are tagged as they land: once a file has stopped
    changing for watch.stability_delay seconds, so copies in progress are never read half
    done. Renames follow the file without re-tagging; deleted files are marked missing
    (`tagger prune` forgets them). SIGTERM or Ctrl-C stops cleanly; what was not finished
    is picked up at the next start. Under systemd (Type=notify) it reports readiness and
    sends watchdog heartbeats. Without FOLDERS, watch.paths from the config is used.
    """
    overrides = _overrides(model, batch_size)
    if observer:
        overrides["watch"] = {"observer": observer}
    settings = app.settings(**overrides)
    logging.getLogger().setLevel(settings.log_level)  # a daemon's log is its journal
    roots = list(folders) or settings.watch.paths
    if not roots:
        raise click.UsageError("no folder to watch: give one, or set watch.paths in the config")
    from tagger.daemon import Daemon
    from tagger.systemd import Notifier

    stop = threading.Event()

    def on_signal(signum: int, _frame: object) -> None:
        log.info("%s: stopping", signal.Signals(signum).name)
        stop.set()

    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, on_signal)
    notifier = Notifier()
    try:
        daemon = Daemon(settings, app.store(), app.classifier(settings), roots, notifier)
        summary = daemon.run(stop)
    finally:
        notifier.close()
    click.echo(f"Stopped after {summary}.")


@cli.command(
    epilog=example(
        "tagger status",
        "tagger status --format json",
        "tagger status || systemctl restart tagger   # exit 3: no daemon",
    )
)
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["table", "json"]),
    default="table",
    show_default=True,
    help="table for people; json for scripts",
)
@pass_app
def status(app: App, fmt: str) -> None:
    """Show whether `tagger watch` runs on this database, and what it is doing.

    Exit status: 0 when a daemon is running and responsive, 1 when it is running but has
    not updated its status for a minute, 3 when none is running (as systemctl uses).
    """
    from tagger.query import totals
    from tagger.status import StatusFiles

    settings = app.settings()
    files = StatusFiles.of(settings)
    running, info = files.running(), files.read()
    stale = running and (info is None or time.time() - info.get("updated", 0) > 60)
    url = make_url(settings.db_url)
    # Asking must not create the database (and race a starting daemon's migration).
    exists = url.get_backend_name() != "sqlite" or Path(str(url.database)).exists()
    report: dict[str, Any] = {
        "running": running,
        "responsive": running and not stale,
        "daemon": info if running else None,
        "database": url.render_as_string(hide_password=True),
        **(totals(app.store()) if exists else {}),
    }
    if fmt == "json":
        click.echo(json.dumps(report, indent=2))
    else:
        click.echo(_status_text(report))
    if not running:
        raise SystemExit(3)
    if stale:
        raise SystemExit(1)


def _status_text(report: dict[str, Any]) -> str:
    def when(stamp: float | None) -> str:
        if not stamp:
            return "never"
        ago = time.time() - stamp
        text = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(stamp))
        return f"{text} ({ago:.0f}s ago)"

    daemon = report["daemon"]
    lines = []
    if daemon is None:
        lines.append("tagger watch is not running on this database.")
    else:
        health = "" if report["responsive"] else " but NOT RESPONDING"
        counts = daemon["counts"]
        lines += [
            f"tagger watch is running{health} (pid {daemon['pid']}), {daemon['state']}",
            f"  since:         {when(daemon['started'])}",
            *(f"  watching:      {root} ({how})" for root, how in daemon["observers"].items()),
            f"  queue:         {daemon['queue']} files",
            f"  this run:      {counts['new']} tagged, {counts['duplicate']} duplicates, "
            f"{counts['unchanged']} unchanged, {counts['failed']} failed",
            f"  last activity: {when(daemon['last_activity'])}",
        ]
    if "files" not in report:
        lines.append(f"database {report['database']}: not created yet")
        return "\n".join(lines)
    lines += [
        f"database {report['database']}:",
        f"  {report['images_tagged']} images tagged, {report['images_failed']} failed; "
        f"{report['files']} files ({report['files_missing']} missing)",
    ]
    return "\n".join(lines)


@cli.command(epilog=example("tagger prune --dry-run", "tagger prune"))
@click.option("--dry-run", is_flag=True, help="only count what would be removed")
@pass_app
def prune(app: App, dry_run: bool) -> None:
    """Forget deleted files, and the tags of content no remaining file holds.

    `tagger watch` and `tagger scan` mark deleted or moved-away paths missing instead of
    forgetting them, so an unmounted share costs nothing; prune makes it final.
    """
    files, images = app.store().prune(dry_run=dry_run)
    verb = "Would remove" if dry_run else "Removed"
    click.echo(f"{verb} {files} missing files and {images} images no file holds.")


@cli.command(
    epilog=example(
        "tagger query label:dog",
        "tagger query label:dog,cat ^label:tabby score:0.5..",
        "tagger query 'path:holidays/2024/*' added:-7d.. --sort -added",
        "tagger query format:png -0 | xargs -0 ls -l",
        "tagger query --label alp --min-score 0.5",
    )
)
@click.argument("terms", nargs=-1)
@click.option("--label", help="a label, as the term label:NAME ('dog', 'tabby', 'n02084071')")
@click.option(
    "--min-score",
    type=click.FloatRange(0, 1),
    help="the least score for label terms without a score: term [default: query.min_score, 0.1]",
)
@click.option(
    "--sort",
    type=click.Choice(SORTS),
    default="-score",
    show_default=True,
    help="order of the answer; a leading - means descending",
)
@click.option("--limit", type=click.IntRange(1), help="at most this many files")
@format_option
@click.option("-0", "--null", is_flag=True, help="bare paths ended by NUL, for xargs -0")
@pass_app
def query(
    app: App,
    terms: tuple[str, ...],
    label: str | None,
    min_score: float | None,
    sort: str,
    limit: int | None,
    fmt: str,
    null: bool,
) -> None:
    """Find files whose tags match TERMS (all of them), best matches first.

    \b
    label:dog        the label or anything below it in WordNet (breeds for dog); a bare
                     word is a label too; names, synonyms (domestic_dog) and wnids work
    label:dog,cat    either label                 ^label:cat   not that label
    score:0.5..      the labels' score (a..b, a.., ..b; without a label: the best label's)
    path:2024/*      a glob on the path (* spans folders; no wildcard: a file or folder)
    added:-7d..      first seen: -12h, -7d, -2w, -3m, -1y, or 2024, 2024-05, 2024-05-31
    format:png,jpg   the file's image format

    Terms are ANDed; quote terms with spaces or globs for the shell. Without terms:
    every tagged file with its best label.
    """
    from tagger.hierarchy import hierarchy
    from tagger.querylang import Query, label_term
    from tagger.search import find

    parsed = _parse(terms)
    if label is not None:  # resolved on its own: its errors need no query column
        named = label_term(hierarchy().resolve(label), names=[label])
        parsed = Query((named, *parsed.terms))
        _notes(Query((named,)))
    threshold = app.settings().query.min_score if min_score is None else min_score
    rows = find(app.store(), parsed, threshold, sort, limit)
    if null or fmt == "paths":
        for row in rows:
            click.echo(row["path"], nl=not null)
            if null:
                click.echo("\0", nl=False)
        return
    found = list(rows)
    if not found and fmt == "table":
        what = f"tagged {label!r} at {threshold} or more" if label and not terms else "match"
        click.echo(f"no files {what}", err=True)
        return
    _print(found, ["path", "label", "score"], fmt)


@cli.command(
    epilog=example(
        "tagger export -o tags.jsonl",
        "tagger export --format csv --query 'label:dog score:0.5..' -o dogs.csv",
    )
)
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["json", "csv"]),
    default="json",
    show_default=True,
    help="json: JSON Lines, one file per line; csv: one row per tag",
)
@click.option("--query", "terms", help="only the files these query terms match (one argument)")
@click.option("--min-score", type=click.FloatRange(0, 1), help="as for `tagger query`")
@click.option(
    "-o",
    "--output",
    type=click.File("w", encoding="utf-8", lazy=True),
    default="-",
    help="write here instead of standard output",
)
@pass_app
def export(app: App, fmt: str, terms: str | None, min_score: float | None, output: Any) -> None:
    """Write every tagged file with all its tags and scores, streamed in path order."""
    import csv
    import shlex

    from tagger.search import EXPORT_COLUMNS, flat
    from tagger.search import export as exported

    try:
        words = shlex.split(terms or "")
    except ValueError as exc:
        raise TaggerError(f"--query {terms!r}: {exc}") from None
    threshold = app.settings().query.min_score if min_score is None else min_score
    files = exported(app.store(), _parse(words), threshold)
    if fmt == "json":
        for file in files:
            output.write(json.dumps(file, ensure_ascii=False) + "\n")
        return
    writer = csv.DictWriter(output, fieldnames=EXPORT_COLUMNS, lineterminator="\n")
    writer.writeheader()
    for file in files:
        writer.writerows(flat(file))


@cli.command(
    epilog=example(
        "tagger retag && tagger scan ~/Pictures",
        "tagger retag label:dog score:..0.5 && tagger scan ~/Pictures",
    )
)
@click.argument("terms", nargs=-1)
@click.option("--min-score", type=click.FloatRange(0, 1), help="as for `tagger query`")
@pass_app
def retag(app: App, terms: tuple[str, ...], min_score: float | None) -> None:
    """Have the next scan tag the files TERMS match (all files without TERMS) again.

    For after a change of the [labels] settings, or for images tagged before tagger
    stored derived labels (dog, bird, ...). Their current tags stay until then.
    """
    from tagger.search import mark_for_retag

    threshold = app.settings().query.min_score if min_score is None else min_score
    count = mark_for_retag(app.store(), _parse(terms), threshold)
    click.echo(f"{count} images will be tagged again by the next scan of their folders")


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
    keys = ("status", "error", "missing_since", "format", "width", "height", "model", "tagged_at")
    for key in (*keys, "sha256"):
        if report.get(key) is not None:
            click.echo(f"  {key}: {report[key]}")
    if report["tags"]:
        click.echo(render(report["tags"], ["rank", "label", "score", "derived"], "table"))


@cli.command(
    epilog=example(
        "tagger labels",
        "tagger labels --min-score 0.5 --format csv",
        "tagger labels --all | grep -i terrier",
        "tagger labels --tree",
    )
)
@click.option("--min-score", type=click.FloatRange(0, 1), help="[default: query.min_score, 0.1]")
@click.option(
    "--all",
    "all_labels",
    is_flag=True,
    help="list every label: the model's 1000 classes, then the WordNet labels above them",
)
@click.option("--tree", is_flag=True, help="counts as a tree: each label under its ancestor")
@format_option
@pass_app
def labels(app: App, min_score: float | None, all_labels: bool, tree: bool, fmt: str) -> None:
    """Count files per label (model classes and derived ones such as dog), most common first."""
    if tree:
        from tagger.search import label_tree

        threshold = app.settings().query.min_score if min_score is None else min_score
        rows = label_tree(app.store(), threshold)
        if fmt == "table":
            rows = [row | {"label": "  " * row["depth"] + row["label"]} for row in rows]
        _print(rows, ["label", "files"], fmt, empty="no tags yet")
        return
    if all_labels:
        from tagger.hierarchy import hierarchy, normalise

        known = hierarchy()
        rows = [
            {
                "class_index": synset.class_index,
                "wnid": synset.wnid,
                "label": synset.name,
                "synonyms": ", ".join(
                    w.replace("_", " ")
                    for w in synset.lemmas
                    if normalise(w) != normalise(synset.name)
                ),
            }
            for synset in [*known.classes, *(known[w] for w in known.ancestor_wnids)]
        ]
        _print(rows, ["class_index", "wnid", "label", "synonyms"], fmt)
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
@model_option
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
        tags = [t for t in classifier.classify(image.pixels[None], top_k)[0] if not t.derived]
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
    from tagger.model import fetch
    from tagger.specs import spec_for

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
        f"{settings.model.name}: ready on {type(classifier).__name__}, batches of"
        f" {classifier.batch_size} (model.runtime = {settings.model.runtime}, model.precision = "
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


def _overrides(model: str | None, batch_size: int | None) -> dict[str, Any]:
    overrides: dict[str, Any] = {}
    if model:
        overrides["model"] = {"name": model}
    if batch_size is not None:
        overrides["batch"] = {"size": batch_size}
    return overrides


def _parse(terms: Sequence[str]) -> Query:
    """Query terms, with a note on stderr for each label name that means several things."""
    from tagger.querylang import parse

    parsed = parse(terms)
    _notes(parsed)
    return parsed


def _notes(parsed: Query) -> None:
    from tagger.querylang import notes

    for note in notes(parsed):
        click.echo(f"note: {note}", err=True)


def _masked(url: Any) -> Any:
    if isinstance(url, str) and "://" in url:
        return make_url(url).render_as_string(hide_password=True)
    return url


def _print(rows: Sequence[dict[str, Any]], columns: list[str], fmt: str, empty: str = "") -> None:
    if not rows and fmt in ("table", "paths"):  # nothing at all for `| xargs`
        if empty:
            click.echo(empty, err=True)
        return
    click.echo(render(rows, columns, fmt))


def main(argv: Sequence[str] | None = None) -> None:
    """Entry point: one line per error, exit 1; tracebacks only with --debug."""
    args = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in args or os.environ.get("TAGGER_DEBUG") == "1"
    fewer_malloc_arenas()  # before any thread starts
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
