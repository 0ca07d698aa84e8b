#!/bin/sh
# Make a Debian bookworm base image with Python 3.11 where base images cannot be pulled:
# debootstrap (minbase) + `docker import`. The host's locally added CA certificates are
# copied in, so that a build behind a TLS-inspecting proxy can reach the registries.
#
#   docker/make-base.sh [IMAGE]        # default tagger-base:bookworm
#   docker build --build-arg PYTHON_IMAGE=tagger-base:bookworm -t tagger .
set -eu
image=${1:-tagger-base:bookworm}
docker=${DOCKER:-docker}
mirror=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
root=$(mktemp -d)
trap 'rm -rf "$root"' EXIT
debootstrap --variant=minbase --include=python3,python3-venv,python-is-python3,ca-certificates \
    bookworm "$root" "$mirror" >/dev/null
if ls /usr/local/share/ca-certificates/*.crt >/dev/null 2>&1; then
    cp /usr/local/share/ca-certificates/*.crt "$root/usr/local/share/ca-certificates/"
    chroot "$root" update-ca-certificates >/dev/null
fi
# What an image needs no more of: apt's lists and caches, documentation, locales, glibc's
# iconv modules (Python has its own codecs), Python's IDE, Tk, 2to3 and offline docs.
rm -rf "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/* "$root"/usr/share/doc/* \
    "$root"/usr/share/man/* "$root"/usr/share/locale/* "$root"/usr/share/info/* \
    "$root"/usr/lib/x86_64-linux-gnu/gconv "$root"/usr/lib/aarch64-linux-gnu/gconv \
    "$root"/usr/lib/python3.11/idlelib "$root"/usr/lib/python3.11/tkinter \
    "$root"/usr/lib/python3.11/lib2to3 "$root"/usr/lib/python3.11/pydoc_data \
    "$root"/usr/lib/python3.11/turtledemo
tar -C "$root" -c . | $docker import \
    --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'CMD ["python3"]' - "$image" >/dev/null
echo "$image"
