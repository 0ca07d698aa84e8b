"""The `tagger` command: the group, its commands by theme, and `main()`, the one place
that turns an error into `error: ...` and exit 1 (what it prints: boundary.py)."""

from __future__ import annotations

import errno
import io
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path

import click

from tagger import __version__
from tagger.cli import admin, browsing, likeness, tagging
from tagger.cli.boundary import (
    OutputError,
    abandon_output,
    debug_report,
    describe,
    flush_output,
    guard_standard_streams,
    mask_log_handlers,
    mask_secrets,
)
from tagger.cli.common import App, example
from tagger.pipeline.threads import fewer_malloc_arenas


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

    Tags live in a SQLite database (default: tagger.db in your data directory), or in a
    PostgreSQL one that several machines share (--db postgresql+psycopg://...). Nothing
    leaves this machine: the default model's weights are installed with tagger.
    """
    level = "DEBUG" if debug else "INFO" if verbose else None
    app = ctx.obj if isinstance(ctx.obj, App) else App()  # main() hands one in
    app.config_file, app.flags = config_file, {"db": db, "log_level": level}
    ctx.obj = app
    logging.basicConfig(
        level=getattr(logging, level or "WARNING"),
        stream=sys.stderr,
        force=True,
        format="%(levelname)s %(message)s" if debug else "%(message)s",
    )
    mask_log_handlers()
    if not debug:  # migration chatter is not news
        logging.getLogger("alembic").setLevel(logging.WARNING)


for command in (
    tagging.scan,
    tagging.watch,
    admin.status,
    admin.prune,
    browsing.query,
    browsing.export,
    tagging.retag,
    browsing.show,
    browsing.labels,
    browsing.duplicates,
    likeness.similar,
    likeness.train,
    likeness.untrain,
    browsing.errors,
    tagging.predict,
    tagging.xmp,
    admin.model,
    admin.db,
    admin.config,
):
    cli.add_command(command)


def main(argv: Sequence[str] | None = None) -> None:
    """Entry point and the one error boundary: one line per error, exit 1; passwords in
    database URLs masked in everything printed; tracebacks only with --debug.

    Output that cannot be written is an error too (`error: cannot write to standard
    output: ...`), except a reader that went away (`tagger query | head -1`): like other
    Unix tools tagger then stops quietly, with exit status 1 (click's choice)."""
    args = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in args or os.environ.get("TAGGER_DEBUG") == "1"
    fewer_malloc_arenas()  # before any thread starts
    guard_standard_streams()
    app = App()
    try:
        result = cli.main(args=args, prog_name="tagger", standalone_mode=False, obj=app)
        flush_output()
    except click.ClickException as exc:
        shown = io.StringIO()
        exc.show(file=shown)
        click.echo(mask_secrets(shown.getvalue()), err=True, nl=False)
        sys.exit(exc.exit_code)
    except (click.Abort, KeyboardInterrupt):
        click.echo("interrupted", err=True)
        sys.exit(130)
    except Exception as exc:
        if isinstance(exc, OutputError):
            abandon_output()  # so that Python's own last flush cannot fail again
            if exc.errno == errno.EPIPE:
                sys.exit(1)
        line = describe(exc, app.database())
        if debug:
            click.echo(debug_report(exc), err=True, nl=False)
            line = line.removesuffix(" (run with --debug for details)")
        click.echo(f"error: {line}", err=True)
        sys.exit(1)
    sys.exit(result if isinstance(result, int) else 0)
