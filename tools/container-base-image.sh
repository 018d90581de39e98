#!/usr/bin/env bash
# A local Python base image for deploy/Dockerfile, for machines that reach no
# container registry (python:3.12-slim cannot be pulled) but do reach Debian's
# mirror and the Python package index. Prints the image's name on stdout:
#
#   base=$(bash tools/container-base-image.sh)
#   podman build --build-arg PYTHON_IMAGE="$base" -f deploy/Dockerfile .
#
# debootstrap (minbase) of the Debian suite and mirror that apt on this machine
# uses, with python3, python3-venv and ca-certificates; `python` -> python3;
# this machine's CA bundle (so pip inside a build trusts what this machine
# trusts on the way to the index) and its pip index settings; then `podman
# import`. Built once: the tag is a hash of every input (this script, suite,
# mirror, packages, CA bundle, pip settings), so a later run finds it with
# `podman image exists` and returns at once; a change of any input builds a new
# one and removes the older ones. Nothing is written into the repository: the
# root filesystem is assembled under ${TMPDIR:-/var/tmp} and removed afterwards.
#
# Needs root (debootstrap), podman and debootstrap: tools/ensure-system-deps.sh.
# Knobs: BASE_SUITE, BASE_MIRROR (default: read from /etc/apt/sources*),
# BASE_REPO (image name, default localhost/image-gateway-base).
set -euo pipefail

say() { echo "container-base-image: $*" >&2; }
die() { say "$*"; exit 1; }

REPO_NAME=${BASE_REPO:-localhost/image-gateway-base}
PACKAGES=python3,python3-venv,ca-certificates
CA_BUNDLE=/etc/ssl/certs/ca-certificates.crt

command -v podman >/dev/null 2>&1 || die "podman is missing (make test-container installs it)"
[[ $(id -u) -eq 0 ]] || die "must run as root (debootstrap, podman's root storage)"

# The first Debian archive apt uses here (not -security/-updates): "MIRROR SUITE".
apt_source() {
    local file
    # deb822 files: Types/URIs/Suites stanzas.
    for file in /etc/apt/sources.list.d/*.sources; do
        [[ -r $file ]] || continue
        awk '
            function flush() {
                if (types ~ /(^| )deb( |$)/ && uri ~ /\/debian\/?$/) {
                    n = split(suites, s, " ")
                    for (i = 1; i <= n; i++) if (s[i] !~ /-/) { print uri, s[i]; found = 1; exit }
                }
                types = uri = suites = ""
            }
            /^[ \t]*$/ { flush(); next }
            /^Types:/  { sub(/^Types:[ \t]*/, ""); types = $0 }
            /^URIs:/   { sub(/^URIs:[ \t]*/, ""); uri = $1 }
            /^Suites:/ { sub(/^Suites:[ \t]*/, ""); suites = $0 }
            END { if (!found) flush() }
        ' "$file"
    done
    # One-line format: deb [opts] URI SUITE COMPONENTS...
    for file in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
        [[ -r $file ]] || continue
        awk '$1 == "deb" {
                i = 2; if ($i ~ /^\[/) { while ($i !~ /\]$/) i++; i++ }
                if ($i ~ /\/debian\/?$/ && $(i + 1) !~ /-/) { print $i, $(i + 1); exit }
             }' "$file"
    done
}

read -r found_mirror found_suite < <(apt_source | head -n 1) || true
MIRROR=${BASE_MIRROR:-${found_mirror:-}}
SUITE=${BASE_SUITE:-${found_suite:-}}
[[ -n $MIRROR && -n $SUITE ]] \
    || die "no Debian archive found in /etc/apt/sources*; set BASE_MIRROR and BASE_SUITE"
[[ -r $CA_BUNDLE ]] || die "no CA bundle at $CA_BUNDLE (package ca-certificates)"

# pip inside the build must find the index this machine uses: its index-url (when
# it is one the container can reach: http/https) and the CA bundle. Other local
# settings (file:// indexes, find-links, constraints) name this machine's disk.
pip_conf() {
    local index=${PIP_INDEX_URL:-}
    if [[ -z $index ]] && command -v python3 >/dev/null 2>&1; then
        index=$(python3 -m pip config get global.index-url 2>/dev/null || true)
    fi
    printf '[global]\ncert = %s\n' "$CA_BUNDLE"
    if [[ $index =~ ^https?:// ]]; then
        printf 'index-url = %s\n' "$index"
    fi
}
PIP_CONF=$(pip_conf)

hash=$(
    {
        sha256sum "${BASH_SOURCE[0]}" | cut -d' ' -f1
        echo "$SUITE $MIRROR $PACKAGES"
        sha256sum "$CA_BUNDLE" | cut -d' ' -f1
        echo "$PIP_CONF"
    } | sha256sum | cut -c1-16
)
TAG="$REPO_NAME:$hash"

if podman image exists "$TAG"; then
    echo "$TAG"
    exit 0
fi

work=$(mktemp -d "${TMPDIR:-/var/tmp}/image-gateway-base.XXXXXX")
trap 'rm -rf "$work"' EXIT
rootfs="$work/rootfs"

say "building $TAG: debootstrap $SUITE from $MIRROR (about a minute, once)"
if ! debootstrap --variant=minbase --include="$PACKAGES" "$SUITE" "$rootfs" "$MIRROR" \
        >"$work/debootstrap.log" 2>&1; then
    tail -n 30 "$work/debootstrap.log" >&2
    die "debootstrap failed"
fi

ln -sf python3 "$rootfs/usr/bin/python"
cp "$CA_BUNDLE" "$rootfs$CA_BUNDLE"
printf '%s\n' "$PIP_CONF" >"$rootfs/etc/pip.conf"
# What an image does not need: downloaded .debs, package lists, docs, translations.
rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/* \
    "$rootfs"/usr/share/doc/* "$rootfs"/usr/share/man/* "$rootfs"/usr/share/locale/*

tar --numeric-owner -C "$rootfs" -cf - . \
    | podman import --quiet \
        --change 'ENV LANG=C.UTF-8' \
        --change 'CMD ["python3"]' \
        --message "debootstrap $SUITE minbase + $PACKAGES" \
        - "$TAG" >/dev/null

# Older bases (other inputs) are not used any more; one still in use stays.
podman images --format '{{.Repository}}:{{.Tag}}' "$REPO_NAME" | while read -r old; do
    [[ $old == "$TAG" ]] || podman rmi "$old" >/dev/null 2>&1 || true
done

say "built $TAG"
echo "$TAG"
