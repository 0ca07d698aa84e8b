"""The web app: routes, the one error boundary of the HTTP interface, and what guards it
(password or token, same-origin posts, a Content-Security-Policy without inline script)."""

from __future__ import annotations

import base64
import hmac
import logging
from importlib import resources
from pathlib import Path

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.middleware.base import BaseHTTPMiddleware, RequestResponseEndpoint
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from tagger.errors import TaggerError
from tagger.web import api, pages
from tagger.web.context import HTTPError, WebContext
from tagger.web.server import loopback, parse_listen

log = logging.getLogger(__name__)

CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; "
    "object-src 'none'; base-uri 'none'; frame-ancestors 'none'; form-action 'self'"
)
_OPEN = ("/healthz", "/static/")  # no password: health checks and the page's own files
_JSON = ("/api/", "/predict", "/healthz", "/metrics")


def create_app(ctx: WebContext) -> Starlette:
    static = Path(str(resources.files("tagger.web"))) / "static"
    routes = [
        Route("/", pages.upload),
        Route("/photos", pages.photos),
        Route("/photos/{sha256}", pages.photo),
        Route("/photos/{sha256}/labels", pages.mark, methods=["POST"]),
        Route("/labels", pages.labels),
        Route("/status", pages.status),
        Route("/predict", api.predict, methods=["POST"]),
        Route("/api/uploads", api.upload, methods=["POST"]),
        Route("/api/images", api.images),
        Route("/api/images/{sha256}", api.image),
        Route("/api/images/{sha256}/thumbnail", api.thumbnail),
        Route("/api/images/{sha256}/similar", api.similar),
        Route("/api/images/{sha256}/labels", api.mark, methods=["POST"]),
        Route("/api/images/{sha256}/original", api.original),
        Route("/api/labels", api.labels),
        Route("/api/status", api.status),
        Route("/healthz", api.healthz),
        Route("/metrics", api.metrics),
        Mount("/static", StaticFiles(directory=static), name="static"),
    ]
    web = ctx.settings.web
    password, token = web.secret("password"), web.secret("token")
    app = Starlette(
        routes=routes,
        middleware=[
            Middleware(
                _Guard,
                password=password,
                token=token,
                hosts=allowed_hosts(web.listen, web.allowed_hosts),
            )
        ],
        exception_handlers={HTTPError: _http_error, HTTPException: _starlette_error},
        max_body_size=ctx.settings.web.max_request_bytes,
    )
    app.state.ctx = ctx
    return app


def allowed_hosts(listen: str, configured: list[str]) -> frozenset[str] | None:
    """The Host names a request may carry (None: any). On loopback only loopback names, so
    that no web site can reach the page through DNS rebinding; elsewhere web.allowed_hosts,
    if set."""
    host, _ = parse_listen(listen)
    if configured:
        return frozenset(name.lower() for name in configured)
    if loopback(host):
        return frozenset({"localhost", "127.0.0.1", "::1", host})
    return None


class _Guard(BaseHTTPMiddleware):
    def __init__(
        self,
        app: object,
        password: str | None,
        token: str | None,
        hosts: frozenset[str] | None,
    ) -> None:
        super().__init__(app)  # type: ignore[arg-type]
        self._password, self._token, self._hosts = password, token, hosts

    async def dispatch(self, request: Request, call_next: RequestResponseEndpoint) -> Response:
        try:
            response = await self._guarded(request, call_next)
        except Exception as exc:  # the one boundary: one line in the log, one for the client
            response = await _unexpected(request, exc)
        _secure(response)
        return response

    async def _guarded(self, request: Request, call_next: RequestResponseEndpoint) -> Response:
        path = request.url.path
        if self._hosts is not None and _host(request) not in self._hosts:
            return _error(request, 400, "unknown Host: add it to web.allowed_hosts")
        guarded = (self._password or self._token) and not path.startswith(_OPEN)
        if guarded and not self._allowed(request.headers.get("authorization", "")):
            return _error(request, 401, "a password or token is needed", auth=True)
        if request.method not in ("GET", "HEAD", "OPTIONS") and not _same_origin(request):
            return _error(request, 403, "cross-site request refused")
        return await call_next(request)

    def _allowed(self, header: str) -> bool:
        scheme, _, value = header.partition(" ")
        if scheme.lower() == "bearer" and self._token:
            return hmac.compare_digest(value.strip().encode(), self._token.encode())
        if scheme.lower() == "basic" and self._password:
            try:
                _, _, given = base64.b64decode(value.strip(), validate=True).partition(b":")
            except ValueError:
                return False
            return hmac.compare_digest(given, self._password.encode())
        return False


def _secure(response: Response) -> None:
    response.headers.setdefault("Content-Security-Policy", CSP)
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Referrer-Policy"] = "no-referrer"
    response.headers["X-Frame-Options"] = "DENY"


def _host(request: Request) -> str:
    """The Host header's name, without the port ("[::1]:8080" -> "::1")."""
    host = request.headers.get("host", "").lower()
    if host.startswith("["):
        return host[1 : host.find("]")] if "]" in host else host
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


def _same_origin(request: Request) -> bool:
    """A browser says where a post comes from; a post from another site is refused (CSRF).
    Programs such as curl send neither header and are let through."""
    if request.headers.get("sec-fetch-site") == "cross-site":
        return False
    origin = request.headers.get("origin")
    if origin is None or origin == "null":
        return origin is None
    host = request.headers.get("host", "")
    return origin.split("://", 1)[-1] == host


def _error(request: Request, status: int, message: str, auth: bool = False) -> Response:
    headers = {"WWW-Authenticate": 'Basic realm="tagger"'} if auth else None
    if request.url.path.startswith(_JSON) or "text/html" not in request.headers.get("accept", ""):
        return JSONResponse({"error": message}, status_code=status, headers=headers)
    return pages.TEMPLATES.TemplateResponse(
        request,
        "error.html",
        {"status": status, "message": message, "path": request.url.path, "exposed": False},
        status_code=status,
        headers=headers,
    )


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPError)
    return _error(request, exc.status, exc.message)


async def _starlette_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    messages = {404: "not found", 405: "method not allowed", 413: "request too large"}
    return _error(request, exc.status_code, messages.get(exc.status_code, str(exc.detail)))


async def _unexpected(request: Request, exc: Exception) -> Response:
    if isinstance(exc, TaggerError):
        return _error(request, 400, str(exc))
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    log.error("%s %s failed: %s: %s", request.method, request.url.path, type(exc).__name__, first)
    return _error(request, 500, "internal error; the daemon's log says more")
