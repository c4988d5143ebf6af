#!/usr/bin/env bash
# Builds, once, the Debian bullseye root with Debian's real Caffe that glrl uses as its test oracle
# (`make caffe-root`; `make install` and so CI run it too).
#
# The root lives outside the repository, at $GLRL_CAFFE_ROOT (default /var/cache/glrl/caffe-root). It is made
# with debootstrap, then docker/install.sh -- the same script the Dockerfile runs -- installs Caffe and glrl
# in it, so CI proves the image's recipe without a Docker engine.
#
# Robust and cheap to call again:
#   - it builds into a temporary folder beside the target and renames it at the end, so an interrupted build
#     never looks complete;
#   - the marker <root>/etc/glrl-caffe-root records the recipe's hash and the package versions; when it
#     matches this recipe, the script does nothing;
#   - it is quiet unless it fails (then it shows the end of its log) and prints how long it took.
# The Debian mirror is the one this machine's apt uses (override with GLRL_DEBIAN_MIRROR). It needs root.
set -euo pipefail

ROOT="${GLRL_CAFFE_ROOT:-/var/cache/glrl/caffe-root}"
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$HERE/.." && pwd)"
MARKER_REL="etc/glrl-caffe-root"
SUITE=bullseye
# Only in the root, not in the image: the test runner, for trying the core's tests on Python 3.9.
ROOT_EXTRA_PACKAGES="python3-pytest"

fail() { echo "caffe_root.sh: $*" >&2; exit 1; }

# What the root holds is decided by install.sh and these settings: their hash names the recipe, and a root
# built by another recipe is rebuilt. Bump ROOT_FORMAT when a change below alters what ends up in the root.
ROOT_FORMAT=2
recipe_hash() {
    { cat "$HERE/install.sh"; echo "$ROOT_FORMAT $SUITE $ROOT_EXTRA_PACKAGES"; } | sha256sum | cut -c1-16
}

RECIPE="$(recipe_hash)"
if [ -f "$ROOT/$MARKER_REL" ] && grep -qx "recipe=$RECIPE" "$ROOT/$MARKER_REL"; then
    exit 0
fi

if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null 2>&1; then
        exec sudo --preserve-env=GLRL_CAFFE_ROOT,GLRL_DEBIAN_MIRROR bash "$0" "$@"
    fi
    fail "building the root needs root privileges (debootstrap, chroot): run 'sudo make caffe-root'"
fi

debian_mirror() {
    # The first Debian archive (not security, not a third-party repo) in this machine's apt sources.
    if [ -n "${GLRL_DEBIAN_MIRROR:-}" ]; then echo "$GLRL_DEBIAN_MIRROR"; return; fi
    local uri
    uri="$(cat /etc/apt/sources.list /etc/apt/sources.list.d/*.list /etc/apt/sources.list.d/*.sources \
              2>/dev/null \
          | sed -n -e 's/^URIs:[[:space:]]*//p' -e 's/^deb[[:space:]]\+\(\[[^]]*\][[:space:]]\+\)\?//p' \
          | tr ' ' '\n' | grep -E '^https?://[^ ]*/debian/?$' | head -n1 || true)"
    echo "${uri:-http://deb.debian.org/debian}"
}
MIRROR="$(debian_mirror)"
MIRROR="${MIRROR%/}"
SECURITY_MIRROR="${MIRROR%/debian}/debian-security"

START=$(date +%s)
PARENT="$(dirname "$ROOT")"
mkdir -p "$PARENT"
BUILD="$(mktemp -d "$ROOT.building.XXXXXX")"
LOG="$BUILD.log"

unmount_under() {
    # Unmount anything still mounted inside $1 (deepest first), so removing it can never reach the host.
    local dir="$1" m
    for m in $(awk -v d="$dir" '$2 == d || index($2, d "/") == 1 {print $2}' /proc/mounts | sort -r); do
        umount -l "$m" 2>/dev/null || true
    done
}

cleanup() {
    local status=$?
    unmount_under "$BUILD"
    if [ -d "$BUILD" ]; then rm -rf --one-file-system "$BUILD"; fi
    if [ "$status" -ne 0 ]; then
        echo "caffe_root.sh: building the Caffe root failed (exit status $status); the end of $LOG:" >&2
        tail -n 40 "$LOG" >&2 || true
        echo "caffe_root.sh: fix the cause and run 'make caffe-root' again (nothing was left half-built)" >&2
    else
        rm -f "$LOG"
    fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

run_in_root() {
    # A command inside the root, with /proc mounted only while it runs.
    mount -t proc proc "$BUILD/proc"
    local status=0
    chroot "$BUILD" /usr/bin/env -i PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
        HOME=/root LANG=C.UTF-8 PIP_CERT=/etc/glrl-host-ca.crt "$@" || status=$?
    umount "$BUILD/proc" || umount -l "$BUILD/proc"
    return "$status"
}

(
    if ! command -v debootstrap >/dev/null 2>&1; then
        apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap
    fi
    echo "== debootstrap $SUITE from $MIRROR"
    debootstrap --variant=minbase "$SUITE" "$BUILD" "$MIRROR"

    cat >"$BUILD/etc/apt/sources.list" <<EOF
deb $MIRROR $SUITE main
deb $MIRROR $SUITE-updates main
deb $SECURITY_MIRROR $SUITE-security main
EOF
    cp /etc/resolv.conf "$BUILD/etc/resolv.conf"
    # pip reaches the package index through this machine's proxy only with this machine's CA bundle.
    cp /etc/ssl/certs/ca-certificates.crt "$BUILD/etc/glrl-host-ca.crt"
    # Never start services inside the root.
    printf '#!/bin/sh\nexit 101\n' >"$BUILD/usr/sbin/policy-rc.d"
    chmod +x "$BUILD/usr/sbin/policy-rc.d"

    echo "== install.sh (glrl and real Caffe)"
    mkdir -p "$BUILD/opt/glrl"
    tar -C "$REPO" --exclude=__pycache__ --exclude='*.egg-info' -cf - pyproject.toml README.md python \
        $(cd "$REPO" && ls -d models prototxt 2>/dev/null) \
        | tar -C "$BUILD/opt/glrl" -xf -
    cp "$HERE/install.sh" "$BUILD/tmp/glrl-install.sh"
    run_in_root sh /tmp/glrl-install.sh /opt/glrl
    rm -f "$BUILD/tmp/glrl-install.sh"

    echo "== extra packages for the oracle root"
    run_in_root sh -c "apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
        --no-install-recommends $ROOT_EXTRA_PACKAGES && apt-get clean && rm -rf /var/lib/apt/lists/*"

    echo "== check"
    run_in_root python3 -c 'import caffe, glrl, numpy, google.protobuf, h5py, PIL'
    {
        echo "recipe=$RECIPE"
        echo "suite=$SUITE"
        echo "mirror=$MIRROR"
        echo "built=$(date -u +%Y-%m-%dT%H:%M:%SZ)"
        run_in_root dpkg-query -W -f='${db:Status-Abbrev} package ${Package}=${Version}\n' \
            'python3-caffe*' 'libcaffe*' libopenblas0-pthread python3 python3-numpy python3-protobuf \
            python3-h5py python3-pil python3-matplotlib python3-tqdm python3-pytest \
            | sed -n 's/^ii *//p'
        echo "size=$(du -sh "$BUILD" | cut -f1)"
        echo "build_seconds=$(( $(date +%s) - START ))"
    } >"$BUILD/$MARKER_REL.tmp"
    mv "$BUILD/$MARKER_REL.tmp" "$BUILD/$MARKER_REL"
) >"$LOG" 2>&1

# Swap in the new root; an older one (another recipe) is removed only after the new one is in place.
OLD=""
if [ -e "$ROOT" ]; then
    OLD="$(mktemp -d "$ROOT.old.XXXXXX")"
    mv "$ROOT" "$OLD/root"
fi
mv "$BUILD" "$ROOT"
if [ -n "$OLD" ]; then
    unmount_under "$OLD"
    rm -rf --one-file-system "$OLD"
fi

SECONDS_TAKEN=$(( $(date +%s) - START ))
echo "caffe_root.sh: built $ROOT in $((SECONDS_TAKEN / 60)) min $((SECONDS_TAKEN % 60)) s ($(du -sh "$ROOT" | cut -f1))"
