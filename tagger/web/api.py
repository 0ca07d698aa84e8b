"""The JSON API and `POST /predict`, the demos' endpoint. Errors are `{"error": "..."}`
with the status that says what went wrong (web/app.py turns HTTPError into that)."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

from starlette.datastructures import UploadFile
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response

from tagger.errors import BadImage, SkipFile
from tagger.labels.names import Language, chinese
from tagger.pipeline.decode import decode, decode_bytes
from tagger.pipeline.hashing import stat_file
from tagger.records import Decoded, Hashed, Tag
from tagger.store import daemons, reports, search
from tagger.web import uploads
from tagger.web.context import (
    HTTPError,
    WebContext,
    check_sha256,
    context,
    in_thread,
    int_param,
    language,
    score_param,
)
from tagger.web.thumbnails import SIZES, ThumbnailError

MAX_FILES = 20  # files in one upload request
PAGE = 48  # images per page


def tag_row(tag: Tag, rank: int, lang: Language = "en") -> dict[str, Any]:
    """One label as /predict answers it: the demos' `probability` in percent, and more."""
    row = {
        "label": tag.label,
        "probability": round(tag.score * 100, 2),
        "score": round(tag.score, 4),
        "wnid": tag.wnid or None,
        "class_index": tag.class_index,
        "rank": rank,
    }
    return row | ({"label_zh": chinese(tag.wnid)} if lang == "zh" else {})


async def _files(request: Request, ctx: WebContext) -> list[UploadFile]:
    length = request.headers.get("content-length")
    if length is None:
        raise HTTPError(411, "send the upload with a Content-Length")
    if not length.isdigit() or int(length) > ctx.settings.web.max_request_bytes:
        raise HTTPError(413, f"over the limit of {ctx.settings.web.max_request_bytes:,} bytes")
    try:
        form = await request.form(max_files=MAX_FILES, max_fields=MAX_FILES)
    except Exception as exc:  # starlette's MultiPartException, a broken body
        raise HTTPError(400, f"not a multipart form upload: {exc}") from None
    files = [item for item in form.getlist("file") if isinstance(item, UploadFile)]
    if not files:
        raise HTTPError(400, 'no file: send the photo as the multipart field "file"')
    return files


def _refused(skip: SkipFile) -> HTTPError:
    if skip.reason.startswith("too many pixels"):
        return HTTPError(413, skip.reason)
    return HTTPError(415 if isinstance(skip, BadImage) else 400, skip.reason)


async def predict(request: Request) -> Response:
    """Classify one photo without storing it: `curl -F file=@cat.jpg HOST/predict`."""
    ctx = context(request)
    started = time.perf_counter()
    top_k = int_param(request, "top_k", 3, 1, 100)
    upload = (await _files(request, ctx))[0]
    limit = ctx.settings.web.max_upload_bytes
    if upload.size is not None and upload.size > limit:
        raise HTTPError(413, f"over the limit of {limit:,} bytes (web.max_upload_bytes)")
    data = await upload.read()
    try:
        async with ctx.decoding:
            image: Decoded = await in_thread(
                decode_bytes, data, ctx.classifier.spec.geometry, ctx.max_pixels
            )
    except SkipFile as skip:
        raise _refused(skip) from None
    tags = await asyncio.wrap_future(ctx.classifier.predict(image.pixels, top_k))
    ctx.metrics.request_seconds.labels("predict").observe(time.perf_counter() - started)
    lang = language(request)
    return JSONResponse([tag_row(tag, rank, lang) for rank, tag in enumerate(tags, 1)])


async def upload(request: Request) -> Response:
    """Store and tag photos: each is written to the inbox, where the daemon tags it."""
    ctx = context(request)
    lang = language(request)
    results = [await _store_one(ctx, file, lang) for file in await _files(request, ctx)]
    stored = [r for r in results if "error" not in r]
    if stored:
        return JSONResponse({"uploads": results}, status_code=201)
    first = results[0]
    return JSONResponse({"error": first["error"], "uploads": results}, status_code=first["status"])


async def _store_one(ctx: WebContext, file: UploadFile, lang: Language) -> dict[str, Any]:
    started = time.perf_counter()
    name = file.filename or "upload"
    try:
        answer = await _accept(ctx, file, lang)
    except HTTPError as refused:
        return {"name": name, "error": refused.message, "status": refused.status}
    ctx.metrics.request_seconds.labels("upload").observe(time.perf_counter() - started)
    return {"name": name, **answer, "seconds": round(time.perf_counter() - started, 3)}


async def _accept(ctx: WebContext, file: UploadFile, lang: Language) -> dict[str, Any]:
    web = ctx.settings.web
    try:
        part, sha256, _ = await in_thread(
            uploads.receive, file.file, ctx.inbox, web.max_upload_bytes
        )
    except uploads.TooLarge as exc:
        raise HTTPError(413, str(exc)) from None
    try:
        known = await in_thread(reports.image_report, ctx.store, sha256, lang)
        if known is not None and known["status"] == "tagged":
            top = [t for t in known["tags"] if not t["derived"]][:3]
            return {
                "sha256": sha256,
                "duplicate": True,
                "tags": _stored_rows(top),
                **_links(sha256),
            }
        hashed = Hashed(await in_thread(stat_file, str(part)), sha256)
        geometry = ctx.classifier.spec.geometry
        try:
            async with ctx.decoding:
                image: Decoded = await in_thread(decode, hashed, geometry, ctx.max_pixels)
        except SkipFile as skip:
            raise _refused(skip) from None
        tags = await asyncio.wrap_future(ctx.classifier.predict(image.pixels, 3))
        final = await in_thread(
            uploads.publish,
            part,
            uploads.safe_name(file.filename, image.format, ctx.settings.scan.extensions),
        )
    finally:
        part.unlink(missing_ok=True)  # published, or refused: nothing half-made is left
    rows = [tag_row(tag, rank, lang) for rank, tag in enumerate(tags, 1)]
    return {
        "sha256": sha256,
        "duplicate": False,
        "stored_as": final.name,
        "tags": rows,
        **_links(sha256),
    }


def _stored_rows(tags: list[dict[str, Any]]) -> list[dict[str, Any]]:
    keys = ("label", "label_zh", "score", "class_index")
    return [
        {k: t[k] for k in keys if k in t}
        | {"probability": round(t["score"] * 100, 2), "wnid": t["wnid"] or None, "rank": rank}
        for rank, t in enumerate(tags, 1)
    ]


def _links(sha256: str) -> dict[str, str]:
    return {"page": f"/photos/{sha256}", "api": f"/api/images/{sha256}"}


async def images(request: Request) -> Response:
    """`GET /api/images?q=label:cat&limit=48&cursor=...`: newest first."""
    ctx = context(request)
    query = ctx.query(request.query_params.get("q", ""))
    limit = int_param(request, "limit", PAGE, 1, 500)
    offset = int_param(request, "cursor", 0, 0, 10**9)
    threshold = score_param(request, ctx.settings.query.min_score)
    lang = language(request)
    rows = await in_thread(
        search.page, ctx.store, query, threshold, "-added", limit + 1, offset, lang
    )
    more = len(rows) > limit
    return JSONResponse(
        {"images": rows[:limit], "next_cursor": str(offset + limit) if more else None}
    )


async def image(request: Request) -> Response:
    ctx = context(request)
    sha256 = check_sha256(request.path_params["sha256"])
    report = await in_thread(reports.image_report, ctx.store, sha256, language(request))
    if report is None:
        raise HTTPError(404, "no such image")
    return JSONResponse(report)


SIMILAR_LIMIT = 100  # photos one request may ask for


async def similar(request: Request) -> Response:
    """`GET /api/images/{sha256}/similar?limit=12&min_similarity=0.5`: the stored photos
    most like this one, best first, as `tagger similar` finds them."""
    ctx = context(request)
    sha256 = check_sha256(request.path_params["sha256"])
    limit = int_param(request, "limit", 12, 1, SIMILAR_LIMIT)
    raw = request.query_params.get("min_similarity") or "0"
    try:
        min_similarity = float(raw)
    except ValueError:
        raise HTTPError(400, f"min_similarity must be a number, not {raw!r}") from None
    if not -1 <= min_similarity <= 1:
        raise HTTPError(400, "min_similarity must be from -1 to 1")
    rows = await in_thread(ctx.similar, sha256, limit, min_similarity)
    return JSONResponse({"sha256": sha256, "similar": rows})


async def mark(request: Request) -> Response:
    """`POST /api/images/{sha256}/labels` with JSON `{"name": "bruno", "example": true}`:
    this photo is (or, false, is not) an example of a label of one's own; the label is
    trained once it has 5 examples, and retrained with each mark after that."""
    ctx = context(request)
    sha256 = check_sha256(request.path_params["sha256"])
    try:
        body = await request.json()
    except ValueError:
        raise HTTPError(400, 'send JSON: {"name": "...", "example": true}') from None
    name, example = (body.get("name"), body.get("example")) if isinstance(body, dict) else (0, 0)
    if not isinstance(name, str) or not isinstance(example, bool):
        raise HTTPError(400, 'send JSON: {"name": "...", "example": true}')
    message = await in_thread(ctx.mark, sha256, name, example)
    return JSONResponse({"message": message})


async def thumbnail(request: Request) -> Response:
    ctx = context(request)
    sha256 = check_sha256(request.path_params["sha256"])
    size = int_param(request, "size", SIZES[0], min(SIZES), max(SIZES))
    if size not in SIZES:
        raise HTTPError(400, f"size must be one of {', '.join(map(str, SIZES))}")
    etag = f'"{sha256}-{size}"'
    caching = {"ETag": etag, "Cache-Control": "private, max-age=31536000, immutable"}
    if request.headers.get("if-none-match") == etag:
        return Response(status_code=304, headers=caching)
    source = await in_thread(ctx.servable, sha256)
    try:
        path: Path = await in_thread(ctx.thumbnails.get, sha256, source, size)
    except ThumbnailError as exc:
        raise HTTPError(415, str(exc)) from None
    return FileResponse(path, media_type="image/jpeg", headers=caching)


_MEDIA_TYPES = {
    "JPEG": "image/jpeg",
    "PNG": "image/png",
    "GIF": "image/gif",
    "WEBP": "image/webp",
    "BMP": "image/bmp",
    "TIFF": "image/tiff",
    "AVIF": "image/avif",
    "HEIF": "image/heif",
}


async def original(request: Request) -> Response:
    ctx = context(request)
    sha256 = check_sha256(request.path_params["sha256"])
    report = await in_thread(reports.image_report, ctx.store, sha256)
    if report is None:
        raise HTTPError(404, "no such image")
    source = await in_thread(ctx.servable, sha256)
    media = _MEDIA_TYPES.get(report["format"] or "", "application/octet-stream")
    return FileResponse(
        source,
        media_type=media,
        filename=source.name,
        content_disposition_type="inline",
        headers={"ETag": f'"{sha256}"', "Cache-Control": "private, max-age=86400"},
    )


async def labels(request: Request) -> Response:
    """`GET /api/labels?min_score=0.3&tree=1`: every label with its files and a cover."""
    ctx = context(request)
    threshold = score_param(request, ctx.settings.query.min_score)
    tree = request.query_params.get("tree", "") in ("1", "true", "yes")
    rows = await in_thread(label_rows, ctx, threshold, tree, language(request))
    return JSONResponse({"labels": rows})


def label_rows(
    ctx: WebContext, threshold: float, tree: bool, lang: Language = "en"
) -> list[dict[str, Any]]:
    rows = (reports.label_tree if tree else reports.label_counts)(ctx.store, threshold, lang)
    covers = reports.label_covers(ctx.store, threshold)
    return [row | {"cover": covers.get(row["label"])} for row in rows]


async def status(request: Request) -> Response:
    ctx = context(request)
    return JSONResponse(await in_thread(status_report, ctx))


def status_report(ctx: WebContext) -> dict[str, Any]:
    """What `tagger status` says, from the daemon itself, with the model and recent failures."""
    return {
        "daemon": ctx.status(),
        "healthy": ctx.healthy(),
        "model": {
            "name": ctx.classifier.spec.name,
            "weights_sha256": ctx.classifier.id.weights_sha256,
            "runtime": ctx.classifier.runtime,
            "batch_size": ctx.classifier.batch_size,
        },
        "database": reports.totals(ctx.store),
        "recent_failures": reports.failures(ctx.store)[-20:],
        "exposed_without_password": ctx.exposed,
        # On a shared (PostgreSQL) database: every daemon writing to it, this one included.
        "daemons": daemons.daemons(ctx.store) if daemons.shared(ctx.store) else [],
    }


async def healthz(request: Request) -> Response:
    """200 while the daemon is alive and its pipeline moving, else 503 (for a health check)."""
    ctx = context(request)
    healthy = ctx.healthy()
    state = ctx.status().get("state")
    return JSONResponse({"healthy": healthy, "state": state}, status_code=200 if healthy else 503)


async def metrics(request: Request) -> Response:
    from tagger.web.metrics import CONTENT_TYPE

    return Response(context(request).metrics.render(), media_type=CONTENT_TYPE)
