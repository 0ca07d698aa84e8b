"""The peer for bench/http_predict.py: the demos' "Flask + ResNet-18" server, on tagger's model.

    python bench/flask_peer.py [--host 127.0.0.1] [--port 5000]

`POST /predict` with the multipart field `file`, the way the PyTorch "Deploying in Python
via a REST API with Flask" tutorial and its many copies do it: read the upload, decode it
in full with Pillow (no JPEG draft), torchvision Resize(256) and CenterCrop(224), normalise,
one image (batch 1) through torch fp32 eager (under `inference_mode`), and the top 3 as
JSON shaped like tagger's answer. Served by Werkzeug's threaded development server
(`app.run(threaded=True)`), as the demos do, so concurrent requests run their forward
passes side by side.

The model is tagger's bundled EfficientNet-Lite0 in torch, the same weights and
preprocessing geometry as `tagger watch` serves, so that the comparison is about serving,
not about the model. The normalisation is `TorchClassifier.logits`'s own.

Flask is not one of tagger's dependencies: it is installed into the venv only for this
benchmark (`.venv/bin/pip install flask`) and deliberately not listed in pyproject.toml.
"""

from __future__ import annotations

import argparse
import io
import logging
from pathlib import Path
from typing import Any

import numpy as np
from flask import Flask, Response, jsonify, request
from PIL import Image
from torchvision import transforms

from tagger.inference.torch_model import TorchClassifier
from tagger.labels.classes import imagenet_classes

TOP_K = 3


def create_app() -> Flask:
    classifier = TorchClassifier.load("efficientnet_lite0", Path("/nonexistent"))
    geometry = classifier.spec.geometry
    prep = transforms.Compose([
        transforms.Resize(geometry.resize, interpolation=transforms.InterpolationMode.BICUBIC),
        transforms.CenterCrop(geometry.crop),
    ])  # fmt: skip
    wnids = [c.wnid for c in imagenet_classes()]
    app = Flask(__name__)

    @app.get("/healthz")
    def healthz() -> Response:
        return jsonify({"status": "ok"})

    @app.post("/predict")
    def predict() -> Any:
        upload = request.files.get("file")
        if upload is None:
            return jsonify({"error": 'no file: send the photo as the multipart field "file"'}), 400
        image = Image.open(io.BytesIO(upload.read())).convert("RGB")
        crop = np.asarray(prep(image), dtype=np.uint8)
        probabilities = classifier.logits(crop[None]).softmax(1)[0]
        scores, indices = (t.tolist() for t in probabilities.topk(TOP_K))
        return jsonify([
            {
                "label": classifier.labels[index],
                "probability": round(score * 100, 2),
                "score": round(score, 4),
                "wnid": wnids[index],
                "class_index": index,
                "rank": rank,
            }
            for rank, score, index in zip(range(1, TOP_K + 1), scores, indices, strict=True)
        ])  # fmt: skip

    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=5000)
    args = parser.parse_args()
    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # no line per request
    create_app().run(host=args.host, port=args.port, threaded=True)


if __name__ == "__main__":
    main()
