#!/usr/bin/env bash
# Makes this machine able to build and run the Dockerfile with podman, without a registry
# (`make image-test` calls it; safe to run again: each step is skipped when already done).
#
# 1. podman and runc from Debian (crun refuses this cgroup setup: "cgroups in hybrid mode
#    not supported"), with containers.conf choosing runc and rlimits within the hard limits.
# 2. A stand-in for the python:3.11-slim base: Debian bookworm's python3 from the archive apt
#    uses, imported under that tag so `FROM python:3.11-slim` finds it without pulling.
#    Where HTTPS goes through a proxy with its own CA, the CA goes into the stand-in too, or
#    pip inside the build cannot reach the package index.
set -euo pipefail

BASE_TAG=docker.io/library/python:3.11-slim
ROOTFS=${POOLING_BASE_ROOTFS:-/var/tmp/pooling-python-slim-rootfs}

need=()
command -v podman >/dev/null 2>&1 || need+=(podman)
command -v runc >/dev/null 2>&1 || need+=(runc)
command -v debootstrap >/dev/null 2>&1 || need+=(debootstrap)
if [ ${#need[@]} -gt 0 ]; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -q
  apt-get install -y -q --no-install-recommends "${need[@]}" uidmap slirp4netns fuse-overlayfs
fi

conf=/etc/containers/containers.conf
if ! grep -qs '^runtime = "runc"' "$conf"; then
  mkdir -p /etc/containers
  cat > "$conf" <<'CONF'
# Written by deploy/image/prepare-podman.sh: runc (crun refuses hybrid cgroups here) and
# rlimits within this machine's hard limits (podman's defaults exceed them).
[containers]
default_ulimits = ["nofile=16384:16384", "nproc=16384:16384"]
[engine]
runtime = "runc"
CONF
fi

if podman image exists "$BASE_TAG"; then
  echo "prepare-podman: $BASE_TAG is there"
  exit 0
fi

# The mirror apt already uses on this machine (deb822 sources or a classic list).
mirror=$(grep -hoE '^(URIs:|deb) +https?://[^ ]+' /etc/apt/sources.list.d/*.sources \
           /etc/apt/sources.list 2>/dev/null | grep -v security | head -n 1 | awk '{print $NF}')
mirror=${mirror:-http://deb.debian.org/debian}
echo "prepare-podman: building the $BASE_TAG stand-in from $mirror"
rm -rf "$ROOTFS"
debootstrap --variant=minbase \
  --include=python3,python3-venv,python3-pip,python-is-python3,ca-certificates \
  bookworm "$ROOTFS" "$mirror" >/tmp/pooling-debootstrap.log 2>&1 \
  || { tail -n 20 /tmp/pooling-debootstrap.log; exit 1; }
rm -f "$ROOTFS"/usr/lib/python3.11/EXTERNALLY-MANAGED
if compgen -G "/usr/local/share/ca-certificates/*.crt" >/dev/null; then
  cp /usr/local/share/ca-certificates/*.crt "$ROOTFS"/usr/local/share/ca-certificates/
  chroot "$ROOTFS" update-ca-certificates >/dev/null
fi
rm -rf "$ROOTFS"/var/cache/apt/archives/*.deb "$ROOTFS"/var/lib/apt/lists/*
tar -C "$ROOTFS" -c . | podman import - "$BASE_TAG" >/dev/null
rm -rf "$ROOTFS"
echo "prepare-podman: $BASE_TAG imported"
