#!/usr/bin/env bash
# Prepares a fresh machine: npm dependencies, then a WebGPU adapter. Without a GPU, WebGPU runs on Mesa's
# lavapipe (CPU Vulkan) through Dawn; Debian bookworm's Mesa is too old for Dawn, bookworm-backports' works.
# As root on Debian this installs it; otherwise it prints what to install. Idempotent and quiet when done.
set -euo pipefail
cd "$(dirname "$0")/.."

export LP_NUM_THREADS="${LP_NUM_THREADS:-$(nproc)}"
export XDG_RUNTIME_DIR="${XDG_RUNTIME_DIR:-/tmp}"

if [ ! -d node_modules/webgpu ] || [ ! -d node_modules/tsx ] || [ package.json -nt node_modules/.package-lock.json ]; then
  echo "setup: installing npm dependencies"
  # Not `npm ci`: npm 11 writes only this platform's optional binaries (deno's) into the lock, and then
  # refuses it as out of sync. `npm install` still takes the locked versions. --ignore-scripts: the bench
  # peer onnxruntime-node's install script downloads GPU binaries (unreachable here; its CPU binary ships in
  # the package), and no dependency we run needs its script (deno's bin.cjs finds its platform binary).
  npm install --ignore-scripts --no-audit --no-fund --loglevel=error
fi

probe() {
  node --input-type=module -e '
    import { create, globals } from "webgpu";
    Object.assign(globalThis, globals);
    const gpu = create([]);
    const a = await gpu.requestAdapter();
    if (!a) process.exit(1);
    const d = await a.requestDevice();
    console.log(a.info.description || a.info.vendor);
    d.destroy();
    process.exit(0);
  ' 2>/dev/null
}

if adapter=$(probe); then
  [ -n "${FREEMASK_SETUP_VERBOSE:-}" ] && echo "setup: WebGPU adapter: $adapter"
  exit 0
fi

missing_msg='No WebGPU adapter. Without a GPU, install Mesa lavapipe >= 24 (Debian bookworm: add the
bookworm-backports suite, then: apt-get install -t bookworm-backports mesa-vulkan-drivers libvulkan1).'

if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null || ! grep -q bookworm /etc/os-release 2>/dev/null; then
  echo "setup: $missing_msg" >&2
  exit 1
fi

echo "setup: installing Mesa lavapipe from bookworm-backports"
# Same mirror as the machine's own bookworm entry.
uri=$(cat /etc/apt/sources.list.d/*.sources 2>/dev/null |
  awk '/^URIs:/ { u = $2 } /^Suites:/ && / bookworm( |$)/ && u != "" && !done { print u; done = 1 } /^$/ { u = "" }' || true)
if [ -z "$uri" ]; then
  uri=$(cat /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null |
    sed -E 's/\[[^]]*\] *//' | awk '$1 == "deb" && $3 == "bookworm" { print $2; exit }' || true)
fi
uri="${uri:-http://deb.debian.org/debian}"
if ! cat /etc/apt/sources.list.d/*.sources /etc/apt/sources.list.d/*.list /etc/apt/sources.list 2>/dev/null | grep -q 'bookworm-backports'; then
  cat >/etc/apt/sources.list.d/freemask-backports.sources <<EOF
Types: deb
URIs: $uri
Suites: bookworm-backports
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
EOF
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq -t bookworm-backports mesa-vulkan-drivers libvulkan1 >/dev/null

if adapter=$(probe); then
  echo "setup: WebGPU adapter: $adapter"
else
  echo "setup: lavapipe installed but still no WebGPU adapter. $missing_msg" >&2
  exit 1
fi
