#!/bin/sh
# Drop what tagger never loads from a finished venv (the image's size is a feature):
# OpenVINO's GPU, NPU, AUTO, HETERO and batching plugins, its C API and the frontends for
# formats other than ONNX and its own IR, C/C++ headers, test suites, build tools (numpy's
# distutils and f2py, pkg_resources), SQLAlchemy's test kit and the dialects of databases
# tagger does not speak, symbol tables, and pip itself. Then compile the bytecode once and
# keep only it, beside each module (tagger's own sources stay, for readable tracebacks):
# 28 MB less, and a read-only container does not recompile at every start.
set -eu
venv=$1
site=$(echo "$venv"/lib/python3*/site-packages)
ov="$site/openvino"
if [ -d "$ov" ]; then
    rm -f "$ov"/libs/libopenvino_intel_gpu_plugin.so "$ov"/libs/libopenvino_intel_npu_plugin.so \
        "$ov"/libs/libopenvino_auto_plugin.so "$ov"/libs/libopenvino_auto_batch_plugin.so \
        "$ov"/libs/libopenvino_hetero_plugin.so "$ov"/libs/libopenvino_c.so* \
        "$ov"/libs/cache.json \
        "$ov"/libs/libopenvino_tensorflow_frontend.so* "$ov"/libs/libopenvino_tensorflow_lite_frontend.so* \
        "$ov"/libs/libopenvino_paddle_frontend.so* "$ov"/libs/libopenvino_pytorch_frontend.so* \
        "$ov"/libs/libopenvino_jax_frontend.so* "$ov"/libs/libopenvino_gguf_frontend.so*
    rm -rf "$ov"/include "$ov"/tools "$ov"/frontend/tensorflow "$ov"/frontend/pytorch \
        "$ov"/frontend/jax "$ov"/frontend/paddle
fi
# The shipped int8 model of the runtime that is not installed: ONNX Runtime's on x86_64,
# OpenVINO's elsewhere.
[ -d "$site/onnxruntime" ] || rm -rf "$site"/tagger/models/*/onnx-int8
[ -d "$site/openvino" ] || rm -rf "$site"/tagger/models/*/openvino-int8
find "$site" -depth -type d \( -name tests -o -name __pycache__ \) -exec rm -rf {} +
rm -rf "$site"/numpy/distutils "$site"/numpy/f2py "$site"/pkg_resources "$site"/sqlalchemy/testing \
    "$site"/sqlalchemy/dialects/mysql "$site"/sqlalchemy/dialects/mssql "$site"/sqlalchemy/dialects/oracle
rm -rf "$site"/pip "$site"/pip-* "$site"/setuptools "$site"/setuptools-* "$site"/_distutils_hack \
    "$site"/distutils-precedence.pth \
    "$venv"/bin/pip*
find "$site" -name "*.pyi" -delete
# Pillow's text drawing and Tk support (tagger draws no text), with the font libraries only
# they load.
rm -f "$site"/PIL/_imagingft.* "$site"/PIL/_imagingtk.* "$site"/pillow.libs/libfreetype-* \
    "$site"/pillow.libs/libharfbuzz-* "$site"/pillow.libs/libpng16-* "$site"/pillow.libs/libbrotli*
# Symbol tables nothing reads at run time (numkong's 44 MB library is 4 MB without). Only
# these two: libraries that auditwheel's patchelf rewrote (numpy.libs, ...) break if
# stripped.
if command -v strip >/dev/null; then
    strip --strip-unneeded "$site"/numkong/_numkong*.so "$site"/usearch/compiled*.so
fi
"$venv"/bin/python - "$site" <<'PY'
import compileall, os, sys
site = sys.argv[1]
for entry in os.listdir(site):
    path = os.path.join(site, entry)
    if entry == "tagger":  # sources stay, bytecode in __pycache__ as usual
        compileall.compile_dir(path, quiet=1, workers=0)
        continue
    if os.path.isdir(path):
        compileall.compile_dir(path, quiet=1, legacy=True, workers=0)
    elif entry.endswith(".py"):
        compileall.compile_file(path, quiet=1, legacy=True)
    for folder, _, files in os.walk(path) if os.path.isdir(path) else [(site, [], [entry])]:
        for name in files:
            source = os.path.join(folder, name)
            if name.endswith(".py") and os.path.exists(source + "c"):
                os.remove(source)
PY
