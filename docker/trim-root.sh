#!/bin/sh
# Trim a Debian root to what runs tagger, for the final image (its size is a feature, the
# demos' images are 489 MB): the package manager and what only it needs (apt, dpkg, perl,
# GnuTLS, gpgv), account, mount and disk tools, keyrings, docs, Python's own installers and
# test suite. Python's standard library keeps only its compiled bytecode.
# The image cannot install packages afterwards: extend the build stage for that.
# Fails the build if a program or library left behind misses a library it links.
set -eu
python=$1  # the Python that runs tagger (the venv's), for the check at the end
drop="apt libapt-pkg6.0 gpgv debian-archive-keyring debconf dpkg perl-base libdb5.3
    libgnutls30 libgcrypt20 libp11-kit0 libunistring2 libidn2-0 libtasn1-6 libnettle8 libhogweed6
    e2fsprogs libext2fs2 libss2 logsave util-linux util-linux-extra mount bsdutils
    libfdisk1 libmount1 libblkid1 libsmartcols1 login passwd adduser
    libpam-modules libpam-modules-bin libpam-runtime libpam0g libsemanage2 libsemanage-common
    libsepol2 libaudit1 libaudit-common libcap-ng0 libsystemd0 liblz4-1 libxxhash0 libzstd1
    init-system-helpers tar findutils diffutils openssl python3-pip-whl python3-setuptools-whl
    libnsl2 libtirpc3 libtirpc-common libgssapi-krb5-2 libkrb5-3 libk5crypto3 libkrb5support0
    libkeyutils1"
if [ -d /var/lib/dpkg/info ]; then
    # dpkg's own lists name each package's files; folders are left (others share them),
    # and so are /etc's few bytes of configuration.
    # (listed in full first: dpkg itself is on the list)
    for package in $drop; do dpkg -L "$package" 2>/dev/null || true; done >/tmp/dropped
    while read -r path; do
        case "$path" in /etc/*) continue ;; esac
        if [ ! -d "$path" ] && { [ -f "$path" ] || [ -L "$path" ]; }; then rm -f "$path"; fi
    done </tmp/dropped
    rm /tmp/dropped
fi
rm -rf /var/lib/dpkg /var/lib/apt /var/cache/* /var/log/* /usr/lib/apt /usr/lib/dpkg \
    /usr/share/doc /usr/share/man /usr/share/info /usr/share/locale /usr/share/lintian \
    /usr/share/bash-completion /usr/share/common-licenses /usr/share/perl5 /usr/share/debconf \
    /usr/share/keyrings /usr/share/pixmaps /usr/share/menu /usr/share/python-wheels \
    /usr/lib/*-linux-gnu/gconv
stdlib=$("$python" -c 'import sysconfig; print(sysconfig.get_paths()["stdlib"])')
rm -rf "$stdlib"/ensurepip "$stdlib"/distutils "$stdlib"/test "$stdlib"/idlelib \
    "$stdlib"/tkinter "$stdlib"/lib2to3 "$stdlib"/pydoc_data "$stdlib"/turtledemo \
    "$stdlib"/lib-dynload/_dbm.* "$stdlib"/lib-dynload/nis.*
# Bytecode beside each module (`-b`), then no sources: a traceback shows no source lines
# for the standard library, and the image is 10 MB smaller.
"$python" -m compileall -b -q -j 0 "$stdlib" >/dev/null || true
"$python" - "$stdlib" <<'PY'
import os, shutil, sys
for folder, dirs, files in os.walk(sys.argv[1]):
    if "__pycache__" in dirs:
        dirs.remove("__pycache__")
        shutil.rmtree(os.path.join(folder, "__pycache__"))
    for name in files:
        if name.endswith(".py") and os.path.exists(os.path.join(folder, name + "c")):
            os.remove(os.path.join(folder, name))
PY
# Every ELF file that is left must find its libraries.
"$python" - /usr/bin /usr/sbin /usr/lib /opt "$stdlib" <<'PY'
import os, subprocess, sys
missing = []
for root in sys.argv[1:]:
    for folder, _, files in os.walk(root):
        for name in files:
            path = os.path.join(folder, name)
            if os.path.islink(path) or not os.path.isfile(path):
                continue
            with open(path, "rb") as fh:
                if fh.read(4) != b"\x7fELF":
                    continue
            out = subprocess.run(["ldd", path], capture_output=True, text=True).stdout
            missing += [f"{path}: {line.strip()}" for line in out.splitlines() if "not found" in line]
if missing:
    sys.exit("trim-root.sh removed a library still in use:\n" + "\n".join(sorted(set(missing))))
PY
