"""The web server's part in `tagger watch --listen`: the shared model, the inbox the daemon
watches, and the server started once the daemon holds its lock."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from tagger.config import Settings
from tagger.inference.base import Classifier
from tagger.store.database import Store
from tagger.watch.daemon import Daemon
from tagger.web.app import create_app
from tagger.web.context import WebContext
from tagger.web.metrics import Metrics
from tagger.web.predict import SharedClassifier
from tagger.web.server import WebServer, loopback, parse_listen
from tagger.web.thumbnails import Thumbnails
from tagger.web.uploads import remove_leftovers

log = logging.getLogger(__name__)


class WebRun:
    def __init__(self, settings: Settings, store: Store, classifier: Classifier) -> None:
        self.settings, self.store = settings, store
        self.host, self.port = parse_listen(settings.web.listen)
        self.inbox = (settings.web.inbox or settings.data_dir / "inbox").expanduser().absolute()
        self.inbox.mkdir(parents=True, exist_ok=True, mode=0o750)
        if removed := remove_leftovers(self.inbox):
            log.info("removed %d unfinished uploads from %s", removed, self.inbox)
        self._daemon: Daemon | None = None
        self.metrics = Metrics(self._status)
        self.classifier = SharedClassifier(classifier, self.metrics.observe_batch)
        self._server: WebServer | None = None
        web = settings.web
        self.exposed = not loopback(self.host) and not (
            web.secret("password") or web.secret("token")
        )

    def _status(self) -> dict[str, Any]:
        return self._daemon.status() if self._daemon is not None else {}

    def start(self, daemon: Daemon, roots: list[Path]) -> None:
        """Serve; called by the daemon once it runs (Daemon.run's on_start)."""
        self._daemon = daemon
        context = WebContext(
            settings=self.settings,
            store=self.store,
            classifier=self.classifier,
            inbox=self.inbox,
            roots=roots,
            thumbnails=Thumbnails(
                self.settings.data_dir / "thumbnails", self.settings.web.thumbnail_cache_bytes
            ),
            metrics=self.metrics,
            status=daemon.status,
            healthy=daemon.healthy,
            exposed=self.exposed,
        )
        if self.exposed:
            log.warning(
                "the web page on %s:%d is open to the network without a password: set "
                "web.password or web.token",
                self.host,
                self.port,
            )
        self._server = WebServer(create_app(context), self.host, self.port)
        self._server.start()

    def stop(self) -> None:
        """After the daemon: requests in flight finish, then the model's web queue closes."""
        if self._server is not None:
            self._server.stop()
        self.classifier.close()
