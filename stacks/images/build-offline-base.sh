#!/usr/bin/env bash
# Build the offline base image policy-harness/debian:bookworm without any container registry.
#
#   debootstrap --variant=minbase bookworm <tmp rootfs> <this host's Debian mirror>
#   + this host's apt sources and apt proxy settings, its CA bundle (and the local CAs it was
#     made from), an /etc/pip.conf that names that bundle, slim-image dpkg/apt settings
#   | docker import  (labelled io.policy-harness.inputs=<digest of all of the above>)
#
# Idempotent: when the image already carries the same inputs digest it says so and exits 0.
#
# usage: build-offline-base.sh [--print-digest] [--force] [IMAGE]   (IMAGE default policy-harness/debian:bookworm)
# env:   HARNESS_DEBIAN_MIRROR  override the mirror read from /etc/apt/sources.list.d/debian.sources
#        HARNESS_ROOTFS_PARENT  where the temporary rootfs goes (default /var/tmp)
# Needs root (debootstrap), debootstrap, and a running Docker engine.
set -euo pipefail

IMAGE=policy-harness/debian:bookworm
SUITE=bookworm
LABEL_KEY=io.policy-harness.inputs
PRINT_DIGEST=0
FORCE=0
for arg in "$@"; do
    case "$arg" in
        --print-digest) PRINT_DIGEST=1 ;;
        --force) FORCE=1 ;;
        -h|--help) sed -n '2,16p' "$0"; exit 0 ;;
        -*) echo "build-offline-base: unknown option $arg (see --help)" >&2; exit 2 ;;
        *) IMAGE=$arg ;;
    esac
done

say() { echo "[offline-base] $*"; }
die() { echo "[offline-base] error: $*" >&2; exit 1; }

SOURCES=/etc/apt/sources.list.d/debian.sources
APT_SETTINGS=/etc/apt/apt.conf.d/99artifact-registry
CA_BUNDLE=/etc/ssl/certs/ca-certificates.crt
LOCAL_CAS=/usr/local/share/ca-certificates

mirror() {
    if [[ -n "${HARNESS_DEBIAN_MIRROR:-}" ]]; then
        echo "$HARNESS_DEBIAN_MIRROR"
    elif [[ -f $SOURCES ]]; then
        # First URIs: line of the first stanza (deb822 format).
        awk '/^URIs:/ {print $2; exit}' "$SOURCES"
    elif [[ -f /etc/apt/sources.list ]]; then
        awk '$1 == "deb" && $2 !~ /^\[/ {print $2; exit}' /etc/apt/sources.list
    fi
}

MIRROR=$(mirror)
[[ -n "$MIRROR" ]] || die "no Debian mirror found in $SOURCES or /etc/apt/sources.list; set HARNESS_DEBIAN_MIRROR=http://deb.debian.org/debian"

# Every input that ends up in the image, hashed in a fixed order (12 hex chars).
inputs_digest() {
    {
        echo "suite=$SUITE mirror=$MIRROR"
        # This script by content only: the same however it is invoked.
        echo "file build-offline-base.sh"; cat "${BASH_SOURCE[0]}"
        for f in "$SOURCES" "$APT_SETTINGS" /etc/apt/sources.list "$CA_BUNDLE"; do
            if [[ -f $f ]]; then echo "file $f"; cat "$f"; fi
        done
        if [[ -d $LOCAL_CAS ]]; then
            find "$LOCAL_CAS" -type f | LC_ALL=C sort | while read -r f; do echo "file $f"; cat "$f"; done
        fi
    } | sha256sum | cut -c1-12
}

DIGEST=$(inputs_digest)
if (( PRINT_DIGEST )); then
    echo "$DIGEST"
    exit 0
fi

command -v docker >/dev/null || die "the docker CLI is not installed (apt-get install docker.io)"
docker version --format '{{.Server.Version}}' >/dev/null 2>&1 \
    || die "no Docker engine answers; start one (e.g. 'dockerd --storage-driver=vfs &' or 'systemctl start docker')"

current=$(docker image inspect --format "{{ index .Config.Labels \"$LABEL_KEY\" }}" "$IMAGE" 2>/dev/null || true)
if [[ "$current" == "$DIGEST" && $FORCE -eq 0 ]]; then
    say "$IMAGE is up to date (inputs $DIGEST); nothing to do (--force rebuilds)"
    exit 0
fi

[[ $(id -u) -eq 0 ]] || die "debootstrap needs root; run this script with sudo"
DEBOOTSTRAP=$(command -v debootstrap || true)
[[ -z "$DEBOOTSTRAP" && -x /usr/sbin/debootstrap ]] && DEBOOTSTRAP=/usr/sbin/debootstrap
[[ -n "$DEBOOTSTRAP" ]] || die "debootstrap is not installed; install it with: apt-get install -y debootstrap"

WORK=$(mktemp -d "${HARNESS_ROOTFS_PARENT:-/var/tmp}/policy-harness-rootfs.XXXXXX")
ROOTFS=$WORK/rootfs

cleanup() {
    # An interrupted debootstrap can leave proc/sys/dev mounted inside the rootfs: unmount
    # them (deepest first) before removing, and never let rm cross into another filesystem.
    local mounts
    mounts=$(awk -v root="$WORK/" 'index($2, root) == 1 {print $2}' /proc/mounts | sort -r)
    for m in $mounts; do umount -l "$m" 2>/dev/null || true; done
    rm -rf --one-file-system "$WORK"
}
trap cleanup EXIT

say "building $IMAGE (inputs $DIGEST; was: ${current:-absent})"
say "debootstrap --variant=minbase $SUITE from $MIRROR into $ROOTFS (a minute or two)"
started=$SECONDS
if ! "$DEBOOTSTRAP" --variant=minbase "$SUITE" "$ROOTFS" "$MIRROR" >"$WORK/debootstrap.log" 2>&1; then
    tail -n 25 "$WORK/debootstrap.log" >&2
    die "debootstrap failed (last lines above)"
fi
say "debootstrap finished in $((SECONDS - started)) s"

# apt: this host's sources (deb822) and proxy settings, slim-image defaults.
rm -f "$ROOTFS/etc/apt/sources.list"
mkdir -p "$ROOTFS/etc/apt/sources.list.d" "$ROOTFS/etc/apt/apt.conf.d"
if [[ -f $SOURCES ]]; then
    cp "$SOURCES" "$ROOTFS/etc/apt/sources.list.d/debian.sources"
else
    cp /etc/apt/sources.list "$ROOTFS/etc/apt/sources.list"
fi
[[ -f $APT_SETTINGS ]] && cp "$APT_SETTINGS" "$ROOTFS/etc/apt/apt.conf.d/"
cat >"$ROOTFS/etc/apt/apt.conf.d/docker-slim" <<'APT'
// Images are built once and never updated in place: keep no caches, no translations,
// no recommends unless asked for.
Dir::Cache::pkgcache "";
Dir::Cache::srcpkgcache "";
DPkg::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
APT::Update::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
Acquire::Languages "none";
Acquire::GzipIndexes "true";
APT::Install-Recommends "false";
APT::Install-Suggests "false";
APT
mkdir -p "$ROOTFS/etc/dpkg/dpkg.cfg.d"
cat >"$ROOTFS/etc/dpkg/dpkg.cfg.d/docker-slim" <<'DPKG'
# as in debian:*-slim: no documentation, manual pages or translations in images
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/man/*
path-exclude /usr/share/info/*
path-exclude /usr/share/locale/*
path-include /usr/share/locale/locale.alias
path-exclude /usr/share/lintian/*
force-unsafe-io
DPKG
# No init system in a container: package scripts must not try to start services.
printf '#!/bin/sh\nexit 101\n' >"$ROOTFS/usr/sbin/policy-rc.d"
chmod 755 "$ROOTFS/usr/sbin/policy-rc.d"

# TLS: the CA bundle (with the proxy's CA) and the local CAs it was made from, so a later
# update-ca-certificates (installing ca-certificates) keeps them. pip gets only `cert`.
mkdir -p "$ROOTFS/etc/ssl/certs"
cp "$CA_BUNDLE" "$ROOTFS/etc/ssl/certs/ca-certificates.crt"
if [[ -d $LOCAL_CAS ]]; then
    mkdir -p "$ROOTFS/usr/local/share/ca-certificates"
    cp -a "$LOCAL_CAS/." "$ROOTFS/usr/local/share/ca-certificates/"
fi
printf '[global]\ncert = /etc/ssl/certs/ca-certificates.crt\n' >"$ROOTFS/etc/pip.conf"

# What Docker provides at run time, and what debootstrap left behind.
rm -f "$ROOTFS/etc/resolv.conf" "$ROOTFS/etc/hostname"
rm -rf "$ROOTFS"/var/lib/apt/lists/* "$ROOTFS"/var/cache/apt/archives/*.deb "$ROOTFS"/var/cache/apt/*.bin \
       "$ROOTFS"/var/log/* "$ROOTFS"/tmp/* "$ROOTFS"/var/tmp/* "$ROOTFS"/usr/share/man/* "$ROOTFS"/usr/share/info/*
# The same trimming the dpkg excludes apply to later installs (copyright files stay).
find "$ROOTFS/usr/share/doc" -mindepth 1 ! -type d ! -name copyright -delete
find "$ROOTFS/usr/share/locale" -mindepth 1 -maxdepth 1 ! -name locale.alias -exec rm -rf {} +

say "importing into Docker as $IMAGE"
tar --numeric-owner -C "$ROOTFS" -c . | docker import \
    --change "LABEL $LABEL_KEY=$DIGEST" \
    --change "LABEL io.policy-harness.mirror=$MIRROR" \
    --change "ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin" \
    --change "ENV LANG=C.UTF-8" \
    --change 'CMD ["bash"]' \
    - "$IMAGE" >/dev/null
say "built $IMAGE ($(docker image inspect --format '{{.Size}}' "$IMAGE" | awk '{printf "%.0f MB", $1/1e6}'), inputs $DIGEST, in $((SECONDS - started)) s"
