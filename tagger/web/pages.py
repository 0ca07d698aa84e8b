"""The pages, rendered on the server; htmx swaps the photo grid and labels in place and
static/upload.js sends uploads with a progress bar. Jinja2 escapes every name and label."""

from __future__ import annotations

import time
from importlib import resources
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.templating import Jinja2Templates

from tagger.labels.names import LANGUAGES
from tagger.store import reports, search
from tagger.web.api import PAGE, label_rows, status_report
from tagger.web.context import (
    HTTPError,
    check_sha256,
    context,
    in_thread,
    int_param,
    language,
    score_param,
)
from tagger.web.thumbnails import SIZES

TEMPLATES = Jinja2Templates(directory=str(Path(str(resources.files("tagger.web"))) / "templates"))
TEMPLATES.env.filters["name"] = lambda row: row.get("label_zh") or row.get("label")
TEMPLATES.env.filters["when"] = lambda stamp: (
    time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(stamp)) if stamp else "never"
)


def _render(request: Request, name: str, status_code: int = 200, **values: Any) -> Response:
    ctx = context(request)
    lang = language(request)
    values |= {"exposed": ctx.exposed, "sizes": SIZES, "path": request.url.path, "lang": lang}
    partial = request.headers.get("hx-request") == "true" and "hx-boosted" not in request.headers
    if partial and name in ("photos.html", "labels.html"):
        name = name.replace(".html", "_results.html")  # htmx asks for the grid alone
    response = TEMPLATES.TemplateResponse(request, name, values, status_code=status_code)
    if request.query_params.get("lang") in LANGUAGES:  # the switch was used: remember it
        response.set_cookie("lang", lang, max_age=365 * 86400, samesite="strict")
    return response


async def upload(request: Request) -> Response:
    ctx = context(request)
    return _render(request, "upload.html", limit=ctx.settings.web.max_upload_bytes)


async def photos(request: Request) -> Response:
    ctx = context(request)
    text = request.query_params.get("q", "")
    offset = int_param(request, "cursor", 0, 0, 10**9)
    try:
        query = ctx.query(text)
    except HTTPError as bad:
        return _render(request, "photos.html", 400, q=text, error=bad.message, rows=[])
    threshold = ctx.settings.query.min_score
    lang = language(request)
    rows = await in_thread(
        search.page, ctx.store, query, threshold, "-added", PAGE + 1, offset, lang
    )
    return _render(
        request,
        "photos.html",
        q=text,
        error=None,
        rows=rows[:PAGE],
        offset=offset,
        next=offset + PAGE if len(rows) > PAGE else None,
        previous=max(0, offset - PAGE) if offset else None,
    )


async def labels(request: Request) -> Response:
    ctx = context(request)
    threshold = score_param(request, ctx.settings.query.min_score)
    tree = request.query_params.get("tree", "") in ("1", "true", "yes")
    rows = await in_thread(label_rows, ctx, threshold, tree, language(request))
    return _render(request, "labels.html", rows=rows, tree=tree, min_score=threshold)


SIMILAR_STRIP = 8  # photos in the photo page's "similar photos" strip


async def photo(request: Request) -> Response:
    ctx = context(request)
    sha256 = check_sha256(request.path_params["sha256"])
    report = await in_thread(reports.image_report, ctx.store, sha256, language(request))
    if report is None:  # maybe an upload on its way into the store: the page looks again
        return _render(request, "pending.html", 404, sha256=sha256)
    try:
        alike = await in_thread(ctx.similar, sha256, SIMILAR_STRIP, 0.0)
    except HTTPError:  # no embedding yet: the page shows no strip
        alike = []
    said = request.query_params.get("said", "")[:300]
    return _render(request, "photo.html", image=report, similar=alike, said=said)


async def mark(request: Request) -> Response:
    """The photo page's forms: add a label of one's own, or say one is wrong."""
    ctx = context(request)
    sha256 = check_sha256(request.path_params["sha256"])
    form = await request.form(max_files=0, max_fields=4)
    name, verdict = form.get("name"), form.get("verdict")
    if not isinstance(name, str) or verdict not in ("yes", "no"):
        raise HTTPError(400, "the form needs a name and a verdict (yes or no)")
    try:
        said = await in_thread(ctx.mark, sha256, name, verdict == "yes")
    except HTTPError as refused:
        said = refused.message
    return RedirectResponse(f"/photos/{sha256}?{urlencode({'said': said})}", status_code=303)


async def status(request: Request) -> Response:
    ctx = context(request)
    return _render(request, "status.html", report=await in_thread(status_report, ctx))
