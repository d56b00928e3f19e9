#!/usr/bin/env bash
# Build the sandbox image without a container registry: debootstrap a Debian root file
# system with packages.txt, and `docker import` it under TAG.
# Usage: sandbox/build-offline.sh [TAG]   (default pipeline-sandbox:2)
set -euo pipefail
tag="${1:-pipeline-sandbox:2}"
here="$(cd "$(dirname "$0")" && pwd)"
mirror="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"
command -v debootstrap >/dev/null || { echo "debootstrap missing: apt-get install -y debootstrap" >&2; exit 1; }
root="$(mktemp -d /tmp/sandbox-root.XXXXXX)"
trap 'rm -rf "$root"' EXIT
pkgs="$(grep -v '^#' "$here/packages.txt" | grep -v '^$' | paste -sd, -)"
debootstrap --variant=minbase --include="$pkgs" bookworm "$root" "$mirror" >/tmp/sandbox-debootstrap.log 2>&1 \
  || { echo "debootstrap failed, see /tmp/sandbox-debootstrap.log" >&2; exit 1; }
chroot "$root" useradd --uid 10001 --no-create-home --shell /usr/sbin/nologin sandbox
rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/*
tar -C "$root" -c . | docker import \
  -c 'USER 10001' -c 'WORKDIR /tmp' -c 'CMD ["python3"]' \
  -c 'LABEL org.pipeline.sandbox.contract="2"' - "$tag" >/dev/null
echo "built $tag"
