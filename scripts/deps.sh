#!/usr/bin/env bash
# scripts/deps.sh: installs the Debian packages dinoc needs when they are missing (as root, or
# through sudo). Sourced by scripts/test.sh and scripts/demo.sh. Set DINOC_SKIP_APT=1 to skip.
dinoc_pkgs=(gcc make libc6-dev clang libclang-rt-14-dev libopenblas-dev libstb-dev libjpeg62-turbo-dev libcjson-dev libdnnl-dev zlib1g-dev python3 python3-numpy python3-torch
            python3-pil python3-skimage python3-regex dataset-fashion-mnist fortunes
            libopenmpi-dev openmpi-bin)
dinoc_install_deps() {
    [ "${DINOC_SKIP_APT:-0}" = 1 ] && return 0
    local missing=() p
    for p in "${dinoc_pkgs[@]}"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
    done
    [ ${#missing[@]} -eq 0 ] && return 0
    echo "installing Debian packages: ${missing[*]}" >&2
    local sudo=""
    [ "$(id -u)" = 0 ] || sudo="sudo"
    export DEBIAN_FRONTEND=noninteractive
    $sudo apt-get update -qq >&2 && $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2
}
