#!/usr/bin/env bash
# Run wgrad's tests on a fresh machine: installs Mesa's lavapipe (a Vulkan
# driver on the CPU) when no Vulkan driver is present, so the GPU tests run
# even without a GPU. Extra arguments go to the test runner.
set -euo pipefail
cd "$(dirname "$0")/.."

# A Vulkan loader and at least one driver manifest (ICD) in any of the
# loader's standard folders. (`grep -q` would stop reading early and
# fail the pipe under pipefail; a glob is tested folder by folder.)
have_vulkan_driver() {
    ldconfig -p 2>/dev/null | grep 'libvulkan\.so\.1' >/dev/null || return 1
    local dir
    for dir in /usr/share/vulkan/icd.d /usr/local/share/vulkan/icd.d /etc/vulkan/icd.d; do
        compgen -G "$dir/*.json" >/dev/null && return 0
    done
    return 1
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
