"""Commands on the stored embeddings: similar photos, and labels of one's own."""

from __future__ import annotations

from pathlib import Path

import click

from tagger.cli.common import App, example, format_option, pass_app, print_rows
from tagger.pipeline.files import printable

MAX_SIMILAR = 1000


@click.command(
    epilog=example(
        "tagger similar ~/Pictures/cat.jpg",
        "tagger similar 3f9a...e1 --limit 5 --min-similarity 0.6 --format json",
    )
)
@click.argument("photo")
@click.option(
    "--limit",
    type=click.IntRange(1, MAX_SIMILAR),
    default=10,
    show_default=True,
    help="at most this many photos",
)
@click.option(
    "--min-similarity",
    type=click.FloatRange(-1, 1),
    default=0.0,
    show_default=True,
    help="leave out photos less alike than this (cosine similarity; 1 = the same)",
)
@format_option()
@pass_app
def similar(app: App, photo: str, limit: int, min_similarity: float, fmt: str) -> None:
    """List stored photos most like PHOTO, best first.

    PHOTO is a file (in the library or not: one that is not is analysed by the model) or
    the sha256 of stored content. Similarity is the cosine of the two photos' embeddings
    (the model's pooled features); the photo itself is never listed.
    """
    from tagger.service.similar import similar as find_similar
    from tagger.service.similar import similar_target, vector_index

    settings = app.settings()
    store = app.store()
    target = similar_target(
        store, photo, lambda: app.classifier(settings), settings.scan.max_pixels
    )
    index = vector_index(settings, store, target.model)
    rows = find_similar(store, index, target, limit, min_similarity)
    if not rows and len(index) == 0 and fmt in ("table", "paths"):
        click.echo("no photo in the database has an embedding yet: run `tagger scan`", err=True)
        return
    columns = ["similarity", "path", *(["sha256"] if fmt == "csv" else [])]
    print_rows(rows, columns, fmt, empty="no similar photos")


@click.command(
    epilog=example(
        "tagger train bruno --examples ~/Pictures/bruno",
        "tagger train receipts --examples scans/receipts --negatives scans/letters",
        "tagger train bruno",
    )
)
@click.argument("name")
@click.option(
    "--examples",
    "examples",
    multiple=True,
    type=click.Path(exists=True, path_type=Path),
    help="a folder or photo of the label (repeatable), tagged already (tagger scan)"
    " [default: the label's stored training set: retrain it]",
)
@click.option(
    "--negatives",
    multiple=True,
    type=click.Path(exists=True, path_type=Path),
    help="photos that are not the label (repeatable) [default: a sample of the library]",
)
@pass_app
def train(app: App, name: str, examples: tuple[Path, ...], negatives: tuple[Path, ...]) -> None:
    """Teach tagger a label of your own from photos of it.

    Fits a logistic regression on the stored embeddings of the examples against the
    negatives (given, or sampled from the rest of the library), prints its cross-validated
    accuracy, and tags every stored photo with it at once (no model run); new photos get it
    as they are tagged. Training a name again replaces it; without --examples it is
    retrained on its stored training set (after a model change, or with the photos marked
    on the web page). Find it with `tagger query label:NAME`; forget it with
    `tagger untrain NAME`.
    """
    from tagger.service.own import train_label

    result = train_label(app.store(), name, examples, negatives)
    click.echo(
        f"trained {name!r} on {result.examples} examples and {result.negatives} negatives:"
        f" cross-validated accuracy {result.accuracy:.0%}; {result.tagged} photos carry it"
    )
    for path in result.not_stored:
        click.echo(f"note: not in the database, left out: {printable(path)}", err=True)


@click.command(epilog=example("tagger untrain bruno"))
@click.argument("name")
@pass_app
def untrain(app: App, name: str) -> None:
    """Forget a label of your own: its model, its training set and its tags."""
    from tagger.service.own import untrain_label

    untrain_label(app.store(), name)
    click.echo(f"removed the label {name!r}")
