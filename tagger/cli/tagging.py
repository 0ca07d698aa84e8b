"""Commands that tag: scan, watch, predict, retag."""

from __future__ import annotations

import functools
import json
import logging
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import click

from tagger.cli.common import (
    App,
    example,
    format_option,
    lang_option,
    min_score_option,
    model_option,
    model_options,
    overrides,
    parse_terms,
    pass_app,
)
from tagger.cli.output import width
from tagger.config import Settings
from tagger.pipeline.files import PhotoFilter, printable, walk_and_sweep
from tagger.records import Outcome, Summary, Swept
from tagger.store.database import Store, sqlite_file

if TYPE_CHECKING:
    from tagger.sidecars.keeper import Sidecars
    from tagger.store.writer import Op

log = logging.getLogger("tagger")


@click.command(
    epilog=example(
        "tagger scan ~/Pictures /mnt/nas/photos",
        "tagger scan --model resnet18 --batch-size 32 ~/Pictures",
        "tagger scan --engine ray --address head:6379 /mnt/nas/photos",
    )
)
@click.argument("folders", nargs=-1, required=True, type=click.Path(exists=True, path_type=Path))
@click.option(
    "--engine",
    type=click.Choice(["local", "ray"]),
    default="local",
    show_default=True,
    help="local: threads on this machine; ray: spread over a Ray cluster (tagger[ray])",
)
@click.option(
    "--address",
    metavar="ADDRESS",
    help="the Ray cluster: auto (the one this machine joined with `ray start`) or its"
    " head's host:port; default RAY_ADDRESS, else a new one on this machine",
)
@model_options
@pass_app
def scan(
    app: App,
    folders: tuple[Path, ...],
    engine: str,
    address: str | None,
    model: str | None,
    batch_size: int | None,
) -> None:
    """Tag every new or changed image under FOLDERS (files work too).

    Unchanged files are skipped without reading them; identical content is classified once
    and every path to it is recorded. Files that cannot be read are listed by `tagger errors`.
    With --engine ray, hashing, decoding and the model run on a Ray cluster whose machines
    see FOLDERS at the same path; results are written here (docs/scale-out.md).
    """
    if address and engine != "ray":
        raise click.UsageError("--address is for --engine ray")
    from tqdm import tqdm  # here, not at the top: every other command would import it
    from tqdm.contrib.logging import logging_redirect_tqdm

    settings = app.settings(**overrides(model, batch_size))
    store = app.store(create=True)
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

        if engine == "ray":
            summary = _backfill(app, settings, store, items, report, address)
        else:
            summary = _local(app, settings, store, items, report)
    click.echo(f"Scanned {summary} in {time.monotonic() - started:.1f}s.")
    if summary.counts[Outcome.FAILED]:
        click.echo("See `tagger errors` for why files failed.", err=True)


@click.command(
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
@click.option(
    "--listen",
    metavar="[HOST:]PORT",
    help="serve the web page and API here; a bare PORT is loopback only [web.listen]",
)
@model_options
@pass_app
def watch(
    app: App,
    folders: tuple[Path, ...],
    observer: str | None,
    listen: str | None,
    model: str | None,
    batch_size: int | None,
) -> None:
    """Tag what is already in FOLDERS, then every image that arrives, until stopped.

    First a reconcile tags whatever changed while tagger was not running (unchanged files
    are not read again), then files are tagged as they land: once a file has stopped
    changing for watch.stability_delay seconds, so copies in progress are never read half
    done. Renames follow the file without re-tagging; deleted files are marked missing
    (`tagger prune` forgets them). SIGTERM or Ctrl-C stops cleanly; what was not finished
    is picked up at the next start. SIGQUIT stops it as SIGTERM does, SIGUSR1 logs its
    status, and SIGHUP is logged and ignored (the config is read at start). Under systemd
    (Type=notify) it reports readiness and sends watchdog heartbeats. Without FOLDERS,
    watch.paths from the config is used.

    With --listen it also serves a web page (upload, photos, labels, status) and a JSON
    API, `POST /predict` among it; uploads land in web.inbox, which is watched too, so
    --listen alone (no FOLDERS) is a complete photo-tagging service.
    """
    changed = overrides(model, batch_size)
    if observer:
        changed["watch"] = {"observer": observer}
    if listen:
        changed["web"] = {"listen": listen}
    settings = app.settings(**changed)
    logging.getLogger().setLevel(settings.log_level)  # a daemon's log is its journal
    roots = list(folders) or list(settings.watch.paths)
    if not roots and not settings.web.listen:
        raise click.UsageError(
            "no folder to watch: give one, set watch.paths in the config, or serve uploads"
            " with --listen"
        )
    from tagger.watch.daemon import Daemon
    from tagger.watch.signals import Signals
    from tagger.watch.systemd import Notifier

    stop = threading.Event()
    signals = Signals(stop)  # before the model loads: a SIGHUP then must not kill it either
    signals.install()
    log.info("database %s", sqlite_file(settings.db_url) or settings.db_url)  # password masked
    app.store(create=True)  # a database that cannot be used stops it before the model loads
    classifier = app.classifier(settings)
    if stop.is_set():  # stopped while the model loaded: nothing started, nothing to drain
        click.echo("Stopped before the first file.")
        return
    notifier = Notifier()
    web = None
    if settings.web.listen:
        from tagger.web.run import WebRun

        web = WebRun(settings, app.store(), classifier)
        roots.append(web.inbox)
        classifier = web.classifier
    sidecars = _sidecars(settings, app.store())
    try:
        daemon = Daemon(
            settings,
            app.store(),
            classifier,
            roots,
            notifier,
            None if sidecars is None else sidecars.committed,
            signals,
        )
        start = None if web is None else (lambda: web.start(daemon, daemon.roots))
        summary = daemon.run(stop, on_start=start)
    finally:
        if web is not None:
            web.stop()
        if sidecars is not None:
            sidecars.close()
        notifier.close()
    click.echo(f"Stopped after {summary}.")


@click.command(
    epilog=example("tagger predict photo.jpg", "tagger predict --top-k 5 --format json *.jpg")
)
@click.argument("files", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--top-k", type=click.IntRange(1, 1000), default=3, show_default=True)
@model_option
@format_option("table", "json")
@lang_option
@pass_app
def predict(
    app: App, files: tuple[Path, ...], top_k: int, model: str | None, fmt: str, lang: str | None
) -> None:
    """Classify FILES and print the top labels, without storing anything."""
    from tagger.service import predict as predictions

    settings = app.settings(**overrides(model, None))
    results = []
    language = app.language(lang)
    classifier = app.classifier(settings)
    for result in predictions(classifier, files, settings.scan.max_pixels, top_k, language):
        if result.error is not None:
            click.echo(f"error: {printable(result.path)}: {result.error}", err=True)
        else:
            results.append(result)
    if fmt == "json":
        rows = [{"path": result.path, "tags": result.tags} for result in results]
        click.echo(json.dumps(rows, indent=2, ensure_ascii=False))
    else:
        for result in results:
            click.echo(printable(result.path))
            for rank, tag in enumerate(result.tags, 1):
                name = tag["label"] if language == "en" else f"{tag['label_zh']} ({tag['label']})"
                click.echo(f"  {rank}. {name}{' ' * max(1, 31 - width(name))}{tag['score']:.3f}")
    if len(results) < len(files):
        sys.exit(1)


@click.command(
    epilog=example(
        "tagger retag && tagger scan ~/Pictures",
        "tagger retag label:dog score:..0.5 && tagger scan ~/Pictures",
    )
)
@click.argument("terms", nargs=-1)
@min_score_option()
@pass_app
def retag(app: App, terms: tuple[str, ...], min_score: float | None) -> None:
    """Have the next scan tag the files TERMS match (all files without TERMS) again.

    For after a change of the [labels] settings, or for images tagged before tagger
    stored derived labels (dog, bird, ...). Their current tags stay until then.
    """
    from tagger.service import retag as mark_for_retag

    count = mark_for_retag(app.store(), parse_terms(terms, app), app.min_score(min_score))
    click.echo(f"{count} images will be tagged again by the next scan of their folders")


def _local(
    app: App,
    settings: Settings,
    store: Store,
    items: list[Path | Swept],
    report: Callable[[str, Outcome], None],
) -> Summary:
    """`scan`: the threaded pipeline on this machine."""
    from tagger.pipeline.runner import Pipeline

    with _following(settings, store) as committed:
        return Pipeline(settings, store, app.classifier(settings), report, committed).run(items)


def _backfill(
    app: App,
    settings: Settings,
    store: Store,
    items: list[Path | Swept],
    report: Callable[[str, Outcome], None],
    address: str | None,
) -> Summary:
    """`scan --engine ray`: the same stages, spread over a Ray cluster."""
    from tagger.pipeline.cluster import Backfill, require_ray
    from tagger.service import load_classifier

    require_ray()
    with _following(settings, store) as committed:
        return Backfill(
            settings,
            store,
            app.classifier(settings),
            functools.partial(load_classifier, settings),
            report,
            committed,
            address,
        ).run(items)


@contextmanager
def _following(settings: Settings, store: Store) -> Iterator[Callable[[list[Op]], object] | None]:
    """What a scan tells of each write, so that XMP sidecars follow it (None: xmp.write is
    off); the sidecar keeper is closed after the scan."""
    sidecars = _sidecars(settings, store)
    try:
        yield None if sidecars is None else sidecars.committed
    finally:
        if sidecars is not None:
            sidecars.close()


def _sidecars(settings: Settings, store: Store) -> Sidecars | None:
    """The XMP sidecar keeper, when xmp.write asks for sidecars."""
    if settings.xmp.write == "off":
        return None
    from tagger.sidecars.keeper import Sidecars

    return Sidecars(settings, store)


@click.command(
    epilog=example(
        "tagger xmp --mode mirror",
        "tagger xmp --mode beside label:dog",
        "TAGGER_XMP__LANGUAGE=zh tagger xmp",
    )
)
@click.argument("terms", nargs=-1)
@click.option(
    "--mode",
    type=click.Choice(["mirror", "beside"]),
    help="where sidecars go: a tree in xmp.dir, or next to each photo [xmp.write]",
)
@min_score_option()
@pass_app
def xmp(app: App, terms: tuple[str, ...], mode: str | None, min_score: float | None) -> None:
    """Write XMP sidecars with the stored labels for the files TERMS match (all without).

    Other photo apps read them as keywords: dc:subject, lr:hierarchicalSubject
    ("tagger|animal|cat|tabby") and digiKam:TagsList. An existing sidecar is merged, never
    overwritten: other apps' fields stay, tagger's own keywords are replaced. With xmp.write
    set, `tagger watch` and `tagger scan` keep sidecars up to date by themselves; this
    command is for what was stored before.
    """
    from tqdm import tqdm

    from tagger.sidecars.keeper import Sidecars
    from tagger.store.search import find

    settings = app.settings()
    chosen = mode or settings.xmp.write
    if chosen == "off":
        raise click.UsageError("say where sidecars go: --mode mirror|beside, or set xmp.write")
    store = app.store()
    sidecars = Sidecars(settings, store, chosen)
    paths = [row["path"] for row in find(store, parse_terms(terms, app), app.min_score(min_score))]
    failed = 0
    for path in tqdm(paths, unit="file", disable=not sys.stderr.isatty(), dynamic_ncols=True):
        outcome = sidecars.write(path)
        if outcome.error is not None:
            failed += 1
            click.echo(f"error: {printable(outcome.sidecar)}: {outcome.error}", err=True)
    where = sidecars.root if chosen == "mirror" else "beside the photos"
    click.echo(f"Wrote {len(paths) - failed} sidecars ({where}); {failed} failed.")
    if failed:
        sys.exit(1)
