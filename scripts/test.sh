#!/usr/bin/env bash
# Run wgrad's tests on a fresh machine: installs Mesa's lavapipe (a Vulkan
# driver on the CPU) when no Vulkan driver is present, so the GPU tests run
# even without a GPU. Extra arguments go to the test runner.
set -euo pipefail
cd "$(dirname "$0")/.."

have_vulkan_driver() {
    ldconfig -p 2>/dev/null | grep -q 'libvulkan\.so\.1' &&
        ls /usr/share/vulkan/icd.d/*.json /etc/vulkan/icd.d/*.json >/dev/null 2>&1
}
if ! have_vulkan_driver; then
    echo "test.sh: no Vulkan driver found; installing Mesa's lavapipe" >&2
    sudo=""
    [ "$(id -u)" -eq 0 ] || sudo="sudo"
    $sudo apt-get update
    $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y mesa-vulkan-drivers libvulkan1
fi
# The Vulkan loader warns without a runtime dir; give it one.
if [ -z "${XDG_RUNTIME_DIR:-}" ]; then
    export XDG_RUNTIME_DIR="${TMPDIR:-/tmp}/wgrad-runtime-$(id -u)"
    mkdir -p -m 700 "$XDG_RUNTIME_DIR"
fi

if cargo nextest --version >/dev/null 2>&1; then
    cargo nextest run --no-fail-fast "$@"
    cargo test --doc
else
    cargo test --no-fail-fast "$@"
fi
