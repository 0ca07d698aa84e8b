#!/bin/sh
# Drop what tagger never loads from a finished venv (the image's size is a feature):
# OpenVINO's GPU and NPU plugins and the frontends for formats other than ONNX and its own
# IR, C/C++ headers, test suites, symbol tables, and pip itself. Then compile the bytecode
# once, so that a read-only container does not recompile at every start.
set -eu
venv=$1
site=$(echo "$venv"/lib/python3*/site-packages)
ov="$site/openvino"
if [ -d "$ov" ]; then
    rm -f "$ov"/libs/libopenvino_intel_gpu_plugin.so "$ov"/libs/libopenvino_intel_npu_plugin.so \
        "$ov"/libs/cache.json \
        "$ov"/libs/libopenvino_tensorflow_frontend.so* "$ov"/libs/libopenvino_tensorflow_lite_frontend.so* \
        "$ov"/libs/libopenvino_paddle_frontend.so* "$ov"/libs/libopenvino_pytorch_frontend.so* \
        "$ov"/libs/libopenvino_jax_frontend.so* "$ov"/libs/libopenvino_gguf_frontend.so*
    rm -rf "$ov"/include "$ov"/tools "$ov"/frontend/tensorflow "$ov"/frontend/pytorch \
        "$ov"/frontend/jax "$ov"/frontend/paddle
fi
# The shipped ONNX Runtime int8 model, where ONNX Runtime is not installed (x86_64).
[ -d "$site/onnxruntime" ] || rm -rf "$site"/tagger/models/*/onnx-int8
find "$site" -depth -type d \( -name tests -o -name __pycache__ \) -exec rm -rf {} +
rm -rf "$site"/pip "$site"/pip-* "$site"/setuptools "$site"/setuptools-* "$site"/_distutils_hack \
    "$site"/distutils-precedence.pth \
    "$venv"/bin/pip*
find "$site" -name "*.pyi" -delete
# Symbol tables nothing reads at run time (numkong's 44 MB library is 4 MB without). Only
# these two: libraries that auditwheel's patchelf rewrote (numpy.libs, ...) break if
# stripped.
if command -v strip >/dev/null; then
    strip --strip-unneeded "$site"/numkong/_numkong*.so "$site"/usearch/compiled*.so
fi
"$venv"/bin/python -m compileall -q -j 0 "$site" >/dev/null || true
