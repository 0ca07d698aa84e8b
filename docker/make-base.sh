#!/bin/sh
# Make a Debian bookworm base image with Python 3.11 where base images cannot be pulled:
# debootstrap (minbase) + `docker import`. The host's locally added CA certificates are
# copied in, so that a build behind a TLS-inspecting proxy can reach the registries.
#
#   docker/make-base.sh [IMAGE]        # default tagger-base:bookworm
#   docker build --build-arg PYTHON_IMAGE=tagger-base:bookworm -t tagger .
# Another architecture, emulated (qemu-user-static registered with binfmt's F flag):
#   ARCH=arm64 docker/make-base.sh tagger-base:bookworm-arm64
set -eu
image=${1:-tagger-base:bookworm}
docker=${DOCKER:-docker}
mirror=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
root=$(mktemp -d)
context=$(mktemp -d)
trap 'rm -rf "$root" "$context"' EXIT
arch=${ARCH:-$(dpkg --print-architecture)}
debootstrap --arch="$arch" --variant=minbase --include=python3,python3-venv,python-is-python3,ca-certificates \
    bookworm "$root" "$mirror" >/dev/null
if ls /usr/local/share/ca-certificates/*.crt >/dev/null 2>&1; then
    cp /usr/local/share/ca-certificates/*.crt "$root/usr/local/share/ca-certificates/"
    chroot "$root" update-ca-certificates >/dev/null
fi
# apt's lists and caches: a build runs apt-get update itself. (The final image is trimmed
# by trim-root.sh, whatever the base.)
rm -rf "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/*
# Imported through a build rather than `docker import`, which cannot mark another
# architecture without the engine's experimental mode.
tar -C "$root" -cf "$context/root.tar" .
cat >"$context/Dockerfile" <<'END'
FROM scratch
ADD root.tar /
ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
CMD ["python3"]
END
DOCKER_BUILDKIT=1 $docker build -q --platform "linux/$arch" -t "$image" "$context" >/dev/null
echo "$image"
