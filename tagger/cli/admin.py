"""Commands that look after tagger: status, prune, models, the database, settings."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

import click
from sqlalchemy.exc import SQLAlchemyError

from tagger.cli.boundary import describe
from tagger.cli.common import (
    MODEL_NAMES,
    App,
    example,
    format_option,
    masked,
    pass_app,
    print_rows,
)
from tagger.cli.output import render
from tagger.config import explain
from tagger.errors import RuntimeUnavailable, TaggerError
from tagger.pipeline.files import printable
from tagger.store.database import database_revisions, describe_server, upgrade_database


@click.command(
    epilog=example(
        "tagger status",
        "tagger status --format json",
        "tagger status || systemctl restart tagger   # exit 3: no daemon",
    )
)
@format_option("table", "json")
@pass_app
def status(app: App, fmt: str) -> None:
    """Show whether `tagger watch` runs on this database, and what it is doing.

    On PostgreSQL, every daemon writing to the database is listed (host, folders, last
    heartbeat); the exit status is 1 when one of them has stopped answering.

    Exit status: 0 when a daemon is running and responsive, 1 when it is running but has
    not updated its status for a minute, 3 when none is running (as systemctl uses), 4
    when the database cannot be read (damaged, not tagger's, unreachable).
    """
    from tagger.service import status_report

    settings = app.settings()
    try:
        state = status_report(settings, app.store)
    except (TaggerError, SQLAlchemyError) as exc:
        click.echo(f"error: {describe(exc, settings.db_url)}", err=True)
        raise SystemExit(4) from None
    report = state.report
    if fmt == "json":
        click.echo(json.dumps(report, indent=2))
    else:
        click.echo(_status_text(report))
    if not state.running:
        raise SystemExit(3)
    if state.stale:
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
    if "daemons" in report:  # a shared database: every daemon writing to it
        lines += _daemons_text(report["daemons"], when)
    elif daemon is None:
        lines.append("tagger watch is not running on this database.")
    else:
        health = "" if report["responsive"] else " but NOT RESPONDING"
        counts = daemon["counts"]
        lines += [
            f"tagger watch is running{health} (pid {daemon['pid']}), {daemon['state']}",
            f"  since:         {when(daemon['started'])}",
            *(
                f"  watching:      {printable(root)} ({how})"
                for root, how in daemon["observers"].items()
            ),
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
    if report.get("images_without_embedding"):
        lines.append(
            f"  {report['images_without_embedding']} tagged images have no embedding yet"
            " (the next scan analyses them again)"
        )
    return "\n".join(lines)


def _daemons_text(daemons: list[dict[str, Any]], when: Callable[[float | None], str]) -> list[str]:
    if not daemons:
        return ["no tagger watch is running on this database."]
    lines = [f"{len(daemons)} tagger watch running on this database:"]
    for daemon in daemons:
        counts = daemon.get("counts", {})
        age = daemon["heartbeat_age"]
        health = "" if daemon["responsive"] else " NOT RESPONDING"
        lines += [
            f"  {daemon['host']} (pid {daemon['pid']}), {daemon['state']}{health}",
            f"    since:          {when(daemon.get('started'))}",
            *(f"    watching:       {printable(root)}" for root in daemon["roots"]),
            f"    last heartbeat: {'unknown' if age is None else f'{age:.0f}s ago'}",
            f"    this run:       {counts.get('new', 0)} tagged, "
            f"{counts.get('duplicate', 0)} duplicates, {counts.get('failed', 0)} failed",
        ]
    return lines


@click.command(epilog=example("tagger prune --dry-run", "tagger prune"))
@click.option("--dry-run", is_flag=True, help="only count what would be removed")
@pass_app
def prune(app: App, dry_run: bool) -> None:
    """Forget deleted files, and the tags of content no remaining file holds.

    `tagger watch` and `tagger scan` mark deleted or moved-away paths missing instead of
    forgetting them, so an unmounted share costs nothing; prune makes it final.
    """
    from tagger.service import prune as forget

    files, images = forget(app.store(), dry_run)
    verb = "Would remove" if dry_run else "Removed"
    click.echo(f"{verb} {files} missing files and {images} images no file holds.")


@click.group(epilog=example("tagger model list", "tagger model fetch resnet18"))
def model() -> None:
    """Models tagger can use, and their weights."""


@model.command("list", epilog=example("tagger model list"))
@pass_app
def model_list(app: App) -> None:
    """Show each model, which one is in use, its weights, and the exports shipped with tagger
    (those run with no torch installed)."""
    from tagger.inference.runtimes import SUPPORTED, bundled
    from tagger.inference.specs import MODELS, weights_file

    settings = app.settings()
    rows = []
    for spec in MODELS.values():
        override = settings.model.weights_path if spec.name == settings.model.name else None
        path = weights_file(spec, settings.data_dir, override)
        shipped = [
            f"{runtime} {precision}"
            for runtime, precisions in SUPPORTED.items()
            for precision in precisions
            if bundled(spec, runtime, precision) is not None
        ]
        rows.append(
            {
                "model": spec.name,
                "in_use": "*" if spec.name == settings.model.name else "",
                "weights": "present" if path.is_file() else "missing",
                "shipped": ", ".join(shipped) or "-",
                "path": str(path),
                "about": spec.summary,
            }
        )
    click.echo(render(rows, ["model", "in_use", "weights", "shipped", "path", "about"], "table"))


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
    from tagger.inference.runtimes import installed
    from tagger.inference.specs import spec_for

    if not installed("torch"):
        raise RuntimeUnavailable(
            "weights are for exporting with torch, which is not installed:"
            " pip install 'tagger[torch]'"
        )
    from tagger.inference.torch_model import fetch

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


@click.group(epilog=example("tagger db upgrade", "tagger db status"))
def db() -> None:
    """The database schema."""


@db.command(
    "upgrade", epilog=example("tagger db upgrade", "tagger --db /data/tagger.db db upgrade")
)
@pass_app
def db_upgrade(app: App) -> None:
    """Migrate the database schema to this tagger's version (back the file up first)."""
    before, after = upgrade_database(app.settings().db_url)
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
    server = describe_server(url)
    current, head = database_revisions(url)
    state = (
        "current"
        if current == head
        else "empty"
        if current is None
        else "needs `tagger db upgrade`"
    )
    click.echo(
        f"{masked(url)}\n"
        + (f"server: {server}\n" if server else "")
        + f"schema {current or '-'} (this tagger: {head}): {state}"
    )


@click.group(epilog=example("tagger config show"))
def config() -> None:
    """Settings and where they come from."""


@config.command(
    "show", epilog=example("tagger config show", "TAGGER_BATCH__SIZE=32 tagger config show")
)
@format_option()
@pass_app
def config_show(app: App, fmt: str) -> None:
    """Print the effective settings and where each came from (flag, env, file, default)."""
    settings = app.settings()
    rows = [
        {"setting": key, "value": masked(value) if key == "db" else value, "source": origin}
        for key, value, origin in explain(settings, app.config_file, **app.flags)
    ]
    rows.insert(1, {"setting": "(db url)", "value": masked(settings.db_url), "source": "derived"})
    print_rows(rows, ["setting", "value", "source"], fmt)
