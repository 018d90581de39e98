#!/usr/bin/env bash
# Make sure the system programs the tests and tools need are installed.
#
#   tools/ensure-system-deps.sh redis-server nginx [chromium] [wrk]
#   tools/ensure-system-deps.sh podman runc catatonit debootstrap openssl curl kubectl
#   tools/ensure-system-deps.sh ip iptables
#
# For every command that is missing (looked up in PATH, /usr/sbin and /usr/bin),
# install its Debian package with apt-get: as root, or through `sudo -n` when
# that works without a password. Otherwise print what to install and exit 1.
# Quiet and idempotent when everything is present.
#
# Services that a package starts on install (nginx on :80, redis on :6379) are
# kept from starting, or stopped and disabled afterwards: the tests start their
# own instances on free ports.
set -euo pipefail

# command -> candidate Debian packages, first available wins
declare -A PACKAGES=(
    [redis-server]="redis-server"
    [nginx]="nginx-light nginx"
    [chromium]="chromium"
    [wrk]="wrk"
    [node]="nodejs"              # node --test: the service worker's logic (tests/js/)
    # make test-container: podman builds and runs the image (daemonless, no Docker
    # engine needed) with runc; debootstrap makes the local base image; openssl the
    # throwaway TLS pair; curl speaks HTTP/2 to nginx; kubectl renders the kustomization.
    [podman]="podman"
    [catatonit]="catatonit"     # podman run --init: compose's `init: true`
    [runc]="runc"
    [debootstrap]="debootstrap"
    [openssl]="openssl"
    [curl]="curl"
    [kubectl]="kubernetes-client"
    # The partition tests (tests/integration/test_ha_partitions.py): network namespaces,
    # veths and a bridge (ip), packets dropped between two hosts (iptables).
    [ip]="iproute2"
    [iptables]="iptables"
)
# command -> init service the package may start
declare -A SERVICES=(
    [redis-server]="redis-server"
    [nginx]="nginx"
)

have() {
    command -v "$1" >/dev/null 2>&1 || [[ -x "/usr/sbin/$1" || -x "/usr/bin/$1" ]]
}

missing=()
for cmd in "$@"; do
    have "$cmd" || missing+=("$cmd")
done
[[ ${#missing[@]} -eq 0 ]] && exit 0

say() { echo "ensure-system-deps: $*" >&2; }

if [[ $(id -u) -eq 0 ]]; then
    SUDO=()
elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
    SUDO=(sudo -n)
else
    say "missing: ${missing[*]}"
    say "install them as root, e.g.:"
    pkgs=()
    for cmd in "${missing[@]}"; do
        read -r -a candidates <<<"${PACKAGES[$cmd]:-$cmd}"
        pkgs+=("${candidates[0]}")
    done
    say "  apt-get update && apt-get install -y --no-install-recommends ${pkgs[*]}"
    exit 1
fi

if ! command -v apt-get >/dev/null 2>&1; then
    say "missing: ${missing[*]}, and this is not a Debian-like system (no apt-get); install them by hand"
    exit 1
fi

say "installing packages for: ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
"${SUDO[@]}" apt-get update -qq

# The first candidate package that apt knows about.
pick_package() {
    local candidate
    for candidate in $1; do
        if apt-cache show "$candidate" >/dev/null 2>&1; then
            echo "$candidate"
            return 0
        fi
    done
    return 1
}

pkgs=()
for cmd in "${missing[@]}"; do
    if ! pkg=$(pick_package "${PACKAGES[$cmd]:-$cmd}"); then
        say "no Debian package found for '$cmd' (tried: ${PACKAGES[$cmd]:-$cmd})"
        exit 1
    fi
    pkgs+=("$pkg")
done

# Keep maintainer scripts from starting services (invoke-rc.d honours policy-rc.d).
# Only when there is none already; removed again on exit.
POLICY=/usr/sbin/policy-rc.d
if [[ ! -e $POLICY ]]; then
    printf '#!/bin/sh\nexit 101\n' | "${SUDO[@]}" tee "$POLICY" >/dev/null
    "${SUDO[@]}" chmod 755 "$POLICY"
    trap '"${SUDO[@]}" rm -f "$POLICY"' EXIT
fi

"${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive \
    apt-get install -y -qq --no-install-recommends "${pkgs[@]}" >/dev/null

# Belt and braces: if a service got started anyway (systemd ignores policy-rc.d),
# stop it and keep it from starting at boot.
for cmd in "${missing[@]}"; do
    service=${SERVICES[$cmd]:-}
    [[ -n $service ]] || continue
    "${SUDO[@]}" service "$service" stop >/dev/null 2>&1 || true
    if command -v systemctl >/dev/null 2>&1; then
        "${SUDO[@]}" systemctl disable "$service" >/dev/null 2>&1 || true
    fi
done

for cmd in "${missing[@]}"; do
    if ! have "$cmd"; then
        say "'$cmd' is still missing after installing ${pkgs[*]}"
        exit 1
    fi
done
say "installed: ${pkgs[*]}"
