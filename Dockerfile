# tagger in a container: watches /app/uploads, serves the web page and /predict on 8080,
# keeps its database in /data. No torch inside: the default model ships exported.
#
#   docker build -t tagger .
#   docker run -d --name tagger -p 8080:8080 -e TAGGER_WEB__PASSWORD=... \
#     -v /volume1/photos:/app/uploads:ro -v tagger-data:/data tagger
#   open http://NAS:8080/ ; curl -u :PASSWORD -F file=@cat.jpg http://NAS:8080/predict
#   docker exec tagger tagger query --label cat
# Watch only, nothing in or out:  -e TAGGER_WEB__LISTEN= --network none --read-only
# Where base images cannot be pulled: docker/make-base.sh, then
#   --build-arg PYTHON_IMAGE=tagger-base:bookworm
# ResNet-18 instead (torch only in a build stage; weights from the build context, see
# README.md, section Docker):  --build-arg MODEL=resnet18

ARG PYTHON_IMAGE=python:3.11-slim-bookworm
ARG MODEL=efficientnet_lite0

FROM ${PYTHON_IMAGE} AS build
ARG PIP_INDEX_URL=https://pypi.org/simple
# HEIC/HEIF photos (iPhones): --build-arg EXTRAS=heif, 26 MB more.
ARG EXTRAS=
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_INDEX_URL=${PIP_INDEX_URL}
RUN python -m venv /opt/tagger
# Dependencies first, pinned, so that a change to tagger's code reuses this layer.
COPY docker/constraints.txt /src/docker/constraints.txt
RUN sed -n 's/^\([A-Za-z0-9_.-]*\)==[^;]*\(;.*\)\{0,1\}$/\1 \2/p' /src/docker/constraints.txt \
      | grep -v pillow_heif >/tmp/dependencies.txt \
 && /opt/tagger/bin/pip install -c /src/docker/constraints.txt -r /tmp/dependencies.txt
COPY pyproject.toml README.md /src/
COPY tagger /src/tagger
COPY migrations /src/migrations
RUN /opt/tagger/bin/pip install -c /src/docker/constraints.txt "/src${EXTRAS:+[$EXTRAS]}" \
 && /opt/tagger/bin/pip check
# binutils' strip, for slim.sh: the vector search's libraries carry 48 MB of symbols.
RUN apt-get update -qq && apt-get install -y -qq --no-install-recommends binutils >/dev/null
COPY docker/slim.sh /src/docker/slim.sh
RUN sh /src/docker/slim.sh /opt/tagger

# The models: the default one is in the package already; another is exported here, with
# torch, and only the artefact goes on.
FROM build AS model-efficientnet_lite0
RUN mkdir -p /opt/tagger/share/tagger

FROM build AS model-resnet18
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
ARG PRECISION=fp32
COPY docker/models/ /opt/tagger/share/tagger/models/
RUN python -m venv /opt/export \
 && /opt/export/bin/pip install --index-url "${TORCH_INDEX_URL}" --extra-index-url "${PIP_INDEX_URL}" \
      -c /src/docker/constraints.txt "/src[torch]" \
 && TAGGER_DATA_DIR=/opt/tagger/share/tagger TAGGER_MODEL__NAME=resnet18 \
      TAGGER_MODEL__PRECISION=${PRECISION} /opt/export/bin/tagger model prepare

FROM model-${MODEL} AS model

# The final root: the base, the venv and the model, then trimmed (docker/trim-root.sh) and
# copied whole into an empty image, so that what was removed takes no layer.
FROM ${PYTHON_IMAGE} AS root
# Match the owner of the NAS share (or pass --user UID:GID to docker run).
ARG UID=1000
ARG GID=1000
RUN groupadd --gid "$GID" tagger \
 && useradd --uid "$UID" --gid "$GID" --home-dir /data --no-create-home --shell /usr/sbin/nologin tagger \
 && mkdir -p /app/uploads /data && chown tagger:tagger /data && chmod 0750 /data
COPY --from=build /opt/tagger /opt/tagger
COPY --from=model /opt/tagger/share/tagger /opt/tagger/share/tagger
# A CUDA or any torch in the image is a failed build, not a 6 GB surprise.
RUN if /opt/tagger/bin/python -c "import importlib.util as u, sys; sys.exit(not any(u.find_spec(m) for m in ('torch', 'nvidia')))"; then \
      echo "torch or CUDA libraries ended up in the final image" >&2; exit 1; \
    fi
COPY docker/trim-root.sh /trim-root.sh
RUN sh /trim-root.sh /opt/tagger/bin/python && rm /trim-root.sh \
 && /opt/tagger/bin/tagger --version >/dev/null

FROM scratch
ARG MODEL
COPY --from=root / /
ENV PATH=/opt/tagger/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    LANG=C.UTF-8 \
    PYTHONUNBUFFERED=1 \
    TAGGER_DATA_DIR=/data \
    TAGGER_MODEL__NAME=$MODEL \
    TAGGER_WEB__LISTEN=0.0.0.0:8080
USER tagger
WORKDIR /data
VOLUME ["/data"]
# Exit 0 while `tagger watch` runs and answers; 3 when it does not run.
HEALTHCHECK --interval=60s --timeout=30s --start-period=20s --retries=3 CMD ["tagger", "status"]
# The web page and API (set TAGGER_WEB__PASSWORD or TAGGER_WEB__TOKEN when others can reach it).
EXPOSE 8080
STOPSIGNAL SIGTERM
ENTRYPOINT ["tagger"]
CMD ["watch", "/app/uploads"]
