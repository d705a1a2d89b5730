#!/usr/bin/env bash
# Install the Debian packages that the remote-storage tests need:
#   - OpenStack Swift (proxy with s3api + tempauth, account/container/object
#     servers) and memcached -> a real S3-compatible endpoint on 127.0.0.1
#   - nginx -> a real HTTP server with Range support on 127.0.0.1
#   - ffmpeg -> the reference the video-source tests compare against
#     (frames of `ffmpeg -vf fps=N`, 16 kHz mono wavs, ffprobe stream starts)
#   - chromium -> the headless browser the viewer tests (`shardgen view`) drive
#     through Playwright's pip driver (never `playwright install`: no browser
#     download, Debian's /usr/bin/chromium is launched by path)
#
# Idempotent: packages already installed are skipped (dpkg -s check), and
# `apt-get update` only runs when something has to be installed and the
# package lists are missing or stale.  Non-interactive.
#
# Usage: scripts/install_test_services.sh        (as root, or with sudo available)
# Exit status is non-zero with a clear message on failure.
set -euo pipefail

PACKAGES=(
  swift swift-proxy swift-account swift-container swift-object
  python3-swift memcached nginx ffmpeg chromium
)

export DEBIAN_FRONTEND=noninteractive

log() { printf '[install_test_services] %s\n' "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

SUDO=""
if [[ "$(id -u)" != 0 ]]; then
  if command -v sudo >/dev/null 2>&1; then
    SUDO="sudo -n"
  else
    die "must run as root (or with passwordless sudo) to install: ${PACKAGES[*]}"
  fi
fi

command -v dpkg >/dev/null 2>&1 || die "dpkg not found: this script supports Debian/Ubuntu only"
command -v apt-get >/dev/null 2>&1 || die "apt-get not found: this script supports Debian/Ubuntu only"

missing=()
for p in "${PACKAGES[@]}"; do
  if ! dpkg -s "$p" 2>/dev/null | grep -q '^Status: install ok installed'; then
    missing+=("$p")
  fi
done

if [[ ${#missing[@]} -eq 0 ]]; then
  log "all packages already installed: ${PACKAGES[*]}"
  exit 0
fi

log "missing packages: ${missing[*]}"
start=$(date +%s)

# apt-get update only when the lists are absent or older than 6 hours, or when
# a first install attempt fails because the candidates are unknown.
need_update=1
if compgen -G "/var/lib/apt/lists/*_Packages*" >/dev/null 2>&1; then
  newest=$(stat -c %Y /var/lib/apt/lists/*_Packages* 2>/dev/null | sort -n | tail -1)
  if [[ -n "${newest}" ]] && (( $(date +%s) - newest < 6 * 3600 )); then
    need_update=0
  fi
fi

apt_install() {
  # --no-install-recommends keeps it small; policy-rc.d below stops the
  # packages' own services from being started by maintainer scripts.
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -q \
    --no-install-recommends \
    -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold \
    "${missing[@]}"
}

# Prevent maintainer scripts from starting system services (nginx on :80,
# memcached on :11211, swift daemons): the tests start their own instances.
POLICY=/usr/sbin/policy-rc.d
created_policy=0
if [[ ! -e "$POLICY" ]]; then
  $SUDO sh -c "printf '#!/bin/sh\nexit 101\n' > $POLICY && chmod 755 $POLICY" && created_policy=1
fi
cleanup() { if [[ $created_policy == 1 ]]; then $SUDO rm -f "$POLICY"; fi; }
trap cleanup EXIT

if [[ $need_update == 1 ]]; then
  log "apt-get update"
  $SUDO apt-get update -q || die "apt-get update failed (no access to the Debian mirror?)"
fi

if ! apt_install; then
  if [[ $need_update == 0 ]]; then
    log "install failed with cached package lists; retrying after apt-get update"
    $SUDO apt-get update -q || die "apt-get update failed (no access to the Debian mirror?)"
    apt_install || die "apt-get install failed for: ${missing[*]}"
  else
    die "apt-get install failed for: ${missing[*]}"
  fi
fi

for p in "${missing[@]}"; do
  dpkg -s "$p" 2>/dev/null | grep -q '^Status: install ok installed' \
    || die "package $p still not installed after apt-get install"
done

log "installed ${missing[*]} in $(( $(date +%s) - start ))s"
