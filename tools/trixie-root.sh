#!/usr/bin/env bash
# trixie-root.sh - a Debian 13 ("trixie") root with GIMP 3.0 and the project's build tools, for
# building and testing the GIMP 3 plug-in on a Debian 12 host: creates it with debootstrap (or
# reuses it when complete), installs the packages, and runs commands inside it (chroot) with the
# project and ../shared bind-mounted at the same paths.
#
#   tools/trixie-root.sh [DIR]                 create or complete the root (default /var/cache/sdg-trixie)
#   tools/trixie-root.sh [DIR] -- CMD ARGS...  the same, then run CMD inside, in the project folder
#
# Idempotent: a finished debootstrap and a finished install each leave a stamp in DIR; the install
# stamp holds the package list, so adding a package installs just that. An interrupted debootstrap
# is started again from nothing. Mounts (/proc, /dev, /dev/pts, /dev/shm, /sys, the project) live
# in a private mount namespace (unshare), so they vanish with the command and nothing is left
# mounted on the host. Needs root. Environment: TRIXIE_MIRROR (default http://deb.debian.org/debian).
#
# Not here: the build or the tests themselves (.ci/run, meson), anything on the host but
# debootstrap.
set -euo pipefail

ROOT=/var/cache/sdg-trixie
if [ $# -gt 0 ] && [ "$1" != "--" ]; then
  ROOT=$1
  shift
fi
CMD=()
if [ $# -gt 0 ]; then
  if [ "$1" != "--" ]; then
    echo "usage: $0 [DIR] [-- CMD ARGS...]" >&2
    exit 2
  fi
  shift
  CMD=("$@")
fi
case "$ROOT" in
  /*) ;;
  *) ROOT=$PWD/$ROOT ;;
esac
if [ "$ROOT" = / ]; then
  echo "trixie-root: refusing to use / as the root" >&2
  exit 2
fi

MIRROR=${TRIXIE_MIRROR:-http://deb.debian.org/debian}
PACKAGES=(libgimp-3.0-dev gimp meson ninja-build gcc pkg-config libc6-dev
          libopenblas-dev libglib2.0-dev libjson-glib-dev libgegl-dev libbabl-dev
          xvfb xauth xdotool valgrind ca-certificates)

PROJECT=$(cd "$(dirname "$0")/.." && pwd)
SHARED=$(cd "$PROJECT/.." && pwd)/shared

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }
now() { date +%s; }
took() { echo "== trixie-root: $1 took $(( $(now) - $2 ))s"; }

# Runs "$@" (a shell command line) inside the root, with /proc etc. mounted in a private mount
# namespace. BIND=1 also bind-mounts the project (and ../shared when there is one).
in_root() {
  local script=$1
  as_root env ROOT="$ROOT" PROJECT="$PROJECT" SHARED="$SHARED" BIND="${BIND:-0}" \
    unshare --mount --propagation private bash -euc '
      mount -t proc proc "$ROOT/proc"
      mount --bind /dev "$ROOT/dev"
      mkdir -p "$ROOT/dev/pts" "$ROOT/dev/shm"
      mount -t devpts -o newinstance,ptmxmode=0666 devpts "$ROOT/dev/pts" 2>/dev/null || true
      mount -t tmpfs -o mode=1777 shm "$ROOT/dev/shm"
      mount -t sysfs sys "$ROOT/sys" 2>/dev/null || mount --rbind /sys "$ROOT/sys"
      mount -t tmpfs -o mode=1777 tmp "$ROOT/tmp"
      if [ "$BIND" = 1 ]; then
        mkdir -p "$ROOT$PROJECT"
        mount --bind "$PROJECT" "$ROOT$PROJECT"
        if [ -d "$SHARED" ]; then
          mkdir -p "$ROOT$SHARED"
          mount --bind "$SHARED" "$ROOT$SHARED"
        fi
      fi
      cp -L /etc/resolv.conf "$ROOT/etc/resolv.conf" 2>/dev/null || true
      exec chroot "$ROOT" /usr/bin/env -i HOME=/root TERM="${TERM:-dumb}" LANG=C.UTF-8 \
        PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
        DEBIAN_FRONTEND=noninteractive "$@"
    ' trixie-root /bin/bash -c "$script"
}

# 1. debootstrap (minbase), from nothing when no finished one is there.
if [ ! -f "$ROOT/.sdg-debootstrap-done" ]; then
  if ! command -v debootstrap >/dev/null 2>&1; then
    t=$(now)
    as_root env DEBIAN_FRONTEND=noninteractive apt-get update -q
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
      debootstrap debian-archive-keyring
    took "installing debootstrap on the host" "$t"
  fi
  if [ -e "$ROOT" ] && [ -n "$(ls -A "$ROOT" 2>/dev/null)" ]; then
    # Only ever remove what an earlier, unfinished debootstrap left (its own work folder).
    if [ -d "$ROOT/debootstrap" ] || [ -f "$ROOT/.sdg-trixie-root" ]; then
      echo "== trixie-root: removing the unfinished root $ROOT"
      if grep -q " $ROOT/" /proc/mounts; then
        echo "trixie-root: something is mounted under $ROOT; unmount it first" >&2
        exit 1
      fi
      as_root rm -rf --one-file-system "$ROOT"
    else
      echo "trixie-root: $ROOT exists, is not empty and is not a root made by this script" >&2
      exit 1
    fi
  fi
  as_root mkdir -p "$ROOT"
  as_root touch "$ROOT/.sdg-trixie-root"
  t=$(now)
  as_root debootstrap --variant=minbase trixie "$ROOT" "$MIRROR"
  # No services start inside the root.
  printf '#!/bin/sh\nexit 101\n' | as_root tee "$ROOT/usr/sbin/policy-rc.d" >/dev/null
  as_root chmod +x "$ROOT/usr/sbin/policy-rc.d"
  as_root touch "$ROOT/.sdg-debootstrap-done"
  took "debootstrap" "$t"
fi

# 2. The packages, when the stamp does not list exactly the ones wanted.
want=$(printf '%s\n' "${PACKAGES[@]}" | sort)
have=$(cat "$ROOT/.sdg-packages-done" 2>/dev/null || true)
if [ "$want" != "$have" ]; then
  t=$(now)
  in_root "apt-get update -q && apt-get install -y -q --no-install-recommends ${PACKAGES[*]} && apt-get clean"
  printf '%s\n' "$want" | as_root tee "$ROOT/.sdg-packages-done" >/dev/null
  took "apt-get install" "$t"
fi
echo "== trixie-root: $ROOT ready ($(in_root 'gimp-console-3.0 --version 2>/dev/null || echo no gimp-console-3.0' | tail -n 1))"

# 3. The command, in the project folder.
if [ ${#CMD[@]} -gt 0 ]; then
  t=$(now)
  q=$(printf '%q ' "${CMD[@]}")
  rc=0
  BIND=1 in_root "cd $(printf '%q' "$PROJECT") && $q" || rc=$?
  took "the command (exit $rc)" "$t"
  exit $rc
fi
