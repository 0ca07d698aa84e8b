# syntax=docker/dockerfile:1
# tagger watch in a container: uploads mounted read-only at /app/uploads, database in /data.
#
#   docker build -t tagger .                          # bundled EfficientNet-Lite0 weights
#   docker build -t tagger --build-arg MODEL=resnet18 .   # bake TorchVision ResNet-18 in
#   docker run -d --name tagger --user 1026:100 -p 8080:8080 -e TAGGER_WEB__PASSWORD=... \
#     -v /volume1/photos:/app/uploads:ro -v /volume1/docker/tagger:/data tagger
#   open http://NAS:8080/ ; curl -u :PASSWORD -F file=@cat.jpg http://NAS:8080/predict
#   docker exec tagger tagger query --label cat
# Without the web page: -e TAGGER_WEB__LISTEN= --network none (nothing leaves, nothing enters).

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ARG MODEL=efficientnet_lite0
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/tagger
# CPU-only PyTorch: PyTorch's CPU index on x86_64; PyPI's aarch64 wheels are CPU-only already.
RUN if [ "$(uname -m)" = "x86_64" ]; then \
      /opt/tagger/bin/pip install --index-url https://download.pytorch.org/whl/cpu \
        "torch>=2.4,<2.15" "torchvision>=0.19,<0.30"; \
    fi
COPY pyproject.toml README.md /src/
COPY tagger /src/tagger
COPY migrations /src/migrations
RUN /opt/tagger/bin/pip install "/src[heif]"
# Weights that are not bundled are fetched now, at build time, into the installation
# (<prefix>/share/tagger/models), so the running container never touches the network.
RUN if [ "$MODEL" != "efficientnet_lite0" ]; then \
      TAGGER_DATA_DIR=/opt/tagger/share/tagger /opt/tagger/bin/tagger model fetch "$MODEL"; \
    fi

FROM ${PYTHON_IMAGE}
ARG MODEL=efficientnet_lite0
# Match the owner of the NAS share (or pass --user UID:GID to docker run).
ARG UID=1000
ARG GID=1000
RUN groupadd --gid "$GID" tagger \
 && useradd --uid "$UID" --gid "$GID" --home-dir /data --no-create-home --shell /usr/sbin/nologin tagger \
 && mkdir -p /app/uploads /data && chown tagger:tagger /data && chmod 0750 /data
COPY --from=build /opt/tagger /opt/tagger
ENV PATH=/opt/tagger/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    TAGGER_DATA_DIR=/data \
    TAGGER_MODEL__NAME=$MODEL \
    TAGGER_WEB__LISTEN=0.0.0.0:8080
USER tagger
WORKDIR /data
VOLUME ["/data"]
# Exit 0 while `tagger watch` runs and answers; 3 when it does not run.
HEALTHCHECK --interval=60s --timeout=30s --start-period=120s --retries=3 CMD ["tagger", "status"]
# The web page and API (set TAGGER_WEB__PASSWORD or TAGGER_WEB__TOKEN when others can reach it).
EXPOSE 8080
STOPSIGNAL SIGTERM
ENTRYPOINT ["tagger"]
CMD ["watch", "/app/uploads"]
