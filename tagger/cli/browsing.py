"""Commands that read what is stored: query, show, labels, duplicates, errors, export."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import click

from tagger.cli.boundary import OutputError
from tagger.cli.common import (
    App,
    example,
    format_option,
    lang_option,
    localised,
    min_score_option,
    parse_terms,
    pass_app,
    print_notes,
    print_rows,
)
from tagger.cli.output import render
from tagger.errors import TaggerError
from tagger.pipeline.files import printable
from tagger.store.search import SORTS


@click.command(
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
@min_score_option(
    "the least score for label terms without a score: term [default: query.min_score, 0.1]"
)
@click.option(
    "--sort",
    type=click.Choice(SORTS),
    default="-score",
    show_default=True,
    help="order of the answer; a leading - means descending",
)
@click.option("--limit", type=click.IntRange(1), help="at most this many files")
@format_option(
    help="table for people; json or csv for programs; paths: one per line, for reading by eye"
    " (a newline in a file name splits it: scripts use -0)"
)
@click.option(
    "-0",
    "--null",
    is_flag=True,
    help="bare paths ended by NUL, for xargs -0: the safe form for scripts",
)
@lang_option
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
    lang: str | None,
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
    every tagged file with its best label. In scripts, read paths with -0 (NUL-ended):
    a file name may hold a newline, which --format paths cannot show apart.
    """
    from tagger.query.language import Query, label_term
    from tagger.service.own import label_resolver
    from tagger.store.search import find

    parsed = parse_terms(terms, app)
    if label is not None:  # resolved on its own: its errors need no query column
        named = label_term(label_resolver(app.store)(label), names=[label])
        parsed = Query((named, *parsed.terms))
        print_notes(Query((named,)))
    threshold = app.min_score(min_score)
    language = app.language(lang)
    rows = find(app.store(), parsed, threshold, sort, limit, language)
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
    print_rows(found, ["path", "label", "score"], fmt, language=language)


@click.command(
    epilog=example(
        "tagger export -o tags.jsonl",
        "tagger export --format csv --query 'label:dog score:0.5..' -o dogs.csv",
    )
)
@format_option(
    "json", "csv", default="json", help="json: JSON Lines, one file per line; csv: one row per tag"
)
@click.option("--query", "terms", help="only the files these query terms match (one argument)")
@min_score_option()
@click.option(
    "-o",
    "--output",
    type=click.File("w", encoding="utf-8", lazy=True),
    default="-",
    help="write here instead of standard output",
)
@lang_option
@pass_app
def export(
    app: App, fmt: str, terms: str | None, min_score: float | None, output: Any, lang: str | None
) -> None:
    """Write every tagged file with all its tags and scores, streamed in path order."""
    import csv
    import shlex

    from tagger.store.search import EXPORT_COLUMNS, flat
    from tagger.store.search import export as exported

    try:
        words = shlex.split(terms or "")
    except ValueError as exc:
        raise TaggerError(f"--query {terms!r}: {exc}") from None
    threshold = app.min_score(min_score)
    language = app.language(lang)
    files = exported(app.store(), parse_terms(words, app), threshold, language)
    try:
        if fmt == "json":
            for file in files:
                output.write(json.dumps(file, ensure_ascii=False) + "\n")
            output.flush()
            return
        _, columns = localised([], EXPORT_COLUMNS, fmt, language)
        writer = csv.DictWriter(output, fieldnames=columns, lineterminator="\n")
        writer.writeheader()
        for file in files:
            writer.writerows(flat(file))
        output.flush()
    except OutputError:
        raise
    except OSError as exc:  # -o FILE: a full disk, a vanished mount
        raise TaggerError(f"cannot write {printable(output.name)}: {exc.strerror}") from None


@click.command(
    epilog=example("tagger show ~/Pictures/cat.jpg", "tagger show --format json cat.jpg")
)
@click.argument("path", type=click.Path(path_type=Path))
@format_option("table", "json")
@lang_option
@pass_app
def show(app: App, path: Path, fmt: str, lang: str | None) -> None:
    """Show the tags and details stored for one file."""
    from tagger.store.reports import file_report

    language = app.language(lang)
    report = file_report(app.store(), os.path.realpath(path), language)
    if report is None:
        raise TaggerError(
            f"{printable(path)} is not in the database; run `tagger scan` on its folder"
        )
    if fmt == "json":
        click.echo(json.dumps(report, indent=2, ensure_ascii=False))
        return
    click.echo(printable(report["path"]))  # escaped, as tables are: names are anyone's
    keys = ("status", "error", "missing_since", "format", "width", "height", "model", "tagged_at")
    for key in (*keys, "sha256"):
        if report.get(key) is not None:
            click.echo(f"  {key}: {printable(str(report[key]))}")
    if report["tags"]:
        columns = ["rank", "label", "score", "derived"]
        tags, columns = localised(report["tags"], columns, "table", language)
        click.echo(render(tags, columns, "table"))


@click.command(
    epilog=example(
        "tagger labels",
        "tagger labels --min-score 0.5 --format csv",
        "tagger labels --all | grep -i terrier",
        "tagger labels --tree",
        "tagger labels --own",
    )
)
@min_score_option("[default: query.min_score, 0.1]")
@click.option(
    "--all",
    "all_labels",
    is_flag=True,
    help="list every label: the model's 1000 classes, then the WordNet labels above them",
)
@click.option("--tree", is_flag=True, help="counts as a tree: each label under its ancestor")
@click.option(
    "--own", is_flag=True, help="list the labels of your own (tagger train) and their training"
)
@format_option()
@lang_option
@pass_app
def labels(
    app: App,
    min_score: float | None,
    all_labels: bool,
    tree: bool,
    own: bool,
    fmt: str,
    lang: str | None,
) -> None:
    """Count files per label (model classes, derived ones such as dog, and your own, marked
    "(own)"), most common first."""
    language = app.language(lang)
    if own:
        from dataclasses import asdict

        from tagger.store.own import own_labels

        rows = [asdict(label) for label in own_labels(app.store())]
        columns = ["name", "examples", "negatives", "accuracy", "trained", "trained_at"]
        print_rows(rows, columns, fmt, empty="no labels of your own (see tagger train)")
        return
    if tree:
        from tagger.store.reports import label_tree

        threshold = app.min_score(min_score)
        rows = label_tree(app.store(), threshold, language)
        if fmt == "table":
            shown, _ = localised(rows, ["label"], fmt, language)
            rows = [row | {"label": "  " * row["depth"] + row["label"]} for row in shown]
            language = "en"  # already in the label column
        print_rows(rows, ["label", "files"], fmt, empty="no tags yet", language=language)
        return
    if all_labels:
        from tagger.service import label_catalogue

        rows = label_catalogue(language)
        print_rows(rows, ["class_index", "wnid", "label", "synonyms"], fmt, language=language)
        return
    from tagger.store.reports import label_counts

    threshold = app.min_score(min_score)
    counts = label_counts(app.store(), threshold, language)
    if fmt == "table":
        counts = [
            row | {"label": f"{row['label']} (own)"} if row.get("own") else row for row in counts
        ]
    print_rows(counts, ["label", "files"], fmt, empty="no tags yet", language=language)


NEAR_DUPLICATE = 0.75  # cosine; measured on real photos: README, "Near-duplicates"


@click.command(
    epilog=example(
        "tagger duplicates",
        "tagger duplicates --format json",
        "tagger duplicates --similar",
        "tagger duplicates --similar 0.95",
    )
)
@click.option(
    "--similar",
    "threshold",
    type=click.FloatRange(0, 1),
    is_flag=False,
    flag_value=NEAR_DUPLICATE,
    default=None,
    help=f"near-duplicates instead: resized, re-compressed, cropped copies, at least this"
    f" alike (cosine of their embeddings) [default with no value: {NEAR_DUPLICATE}]",
)
@format_option("table", "json")
@pass_app
def duplicates(app: App, threshold: float | None, fmt: str) -> None:
    """List groups of paths that hold identical content (or, --similar, alike content)."""
    from tagger.store.reports import duplicate_groups

    if threshold is not None:
        _near_duplicates(app, threshold, fmt)
        return
    groups = duplicate_groups(app.store())
    if fmt == "json":
        click.echo(json.dumps(groups, indent=2, ensure_ascii=False))
    elif not groups:
        click.echo("no duplicates", err=True)
    for group in groups if fmt == "table" else []:
        click.echo(f"{group['sha256'][:12]}  {len(group['paths'])} copies")
        for path in group["paths"]:
            click.echo(f"  {printable(path)}")


def _near_duplicates(app: App, threshold: float, fmt: str) -> None:
    from tagger.service.similar import near_duplicates

    groups = near_duplicates(app.settings(), app.store(), threshold)
    if fmt == "json":
        click.echo(json.dumps(groups, indent=2, ensure_ascii=False))
        return
    if not groups:
        click.echo(f"no near-duplicates at {threshold} or more alike", err=True)
    for group in groups:
        click.echo(f"{len(group['paths'])} alike (similarity {group['similarity']} or more)")
        for path in group["paths"]:
            click.echo(f"  {printable(path)}")


@click.command(epilog=example("tagger errors", "tagger errors --format csv > failed.csv"))
@format_option()
@pass_app
def errors(app: App, fmt: str) -> None:
    """List files that could not be tagged, and why."""
    from tagger.store.reports import failures

    print_rows(failures(app.store()), ["path", "reason"], fmt, empty="no failed files")
