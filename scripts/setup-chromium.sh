#!/usr/bin/env bash
# A headless Chromium for the gallery's test (Debian's `chromium` package): prints its path, installing it first
# when missing (as root on Debian); otherwise says what to install and fails. Quiet when it is there.
set -euo pipefail
for c in "${CHROMIUM:-}" chromium chromium-browser google-chrome; do
  if [ -n "$c" ] && command -v "$c" >/dev/null; then command -v "$c"; exit 0; fi
done
if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null; then
  echo "setup-chromium: no Chromium found; install Debian's chromium package (or set CHROMIUM=/path/to/chrome)" >&2
  exit 1
fi
echo "setup-chromium: installing Debian's chromium package" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq >&2
apt-get install -y -qq --no-install-recommends chromium >/dev/null
command -v chromium
