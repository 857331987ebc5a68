#!/usr/bin/env bash
# Prints the name of a Debian 12 base image with Debian's python3 and python3-venv, built here with
# mmdebstrap from Debian's packages (no container registry is reachable) and imported into podman.
# The root filesystem tarball is cached under build/image/, keyed by the package list and this script,
# so the next run only imports it (or finds the image already there).
set -euo pipefail
suite=bookworm
packages=python3,python3-venv,ca-certificates
mirror=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
security=${DEBIAN_SECURITY_MIRROR:-http://deb.debian.org/debian-security}
cache=${1:-build/image}

key=$( { echo "$suite $packages $mirror $security"; cat "$0"; } | sha256sum | cut -c1-12)
image=localhost/moderation-gateway-base:$suite-$key
tarball=$cache/debian-$suite-$key.tar

if podman image exists "$image"; then
    echo "$image"
    exit 0
fi
mkdir -p "$cache"
if [ ! -s "$tarball" ]; then
    # minbase: essential packages and apt only. No apt lists or caches are kept in the image.
    mmdebstrap --quiet --variant=minbase --format=tar --include="$packages" \
        --aptopt='Acquire::Check-Valid-Until "false"' \
        --customize-hook='rm -rf "$1"/var/lib/apt/lists/* "$1"/var/cache/apt/*' \
        "$suite" "$tarball.partial" \
        "deb $mirror $suite main" "deb $mirror $suite-updates main" "deb $security $suite-security main" >&2
    mv "$tarball.partial" "$tarball"
fi
podman import --quiet --change 'CMD ["python3"]' "$tarball" "$image" >/dev/null
echo "$image"
