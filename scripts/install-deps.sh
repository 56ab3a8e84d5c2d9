#!/usr/bin/env bash
# Installs the Debian 12 packages kvserve builds against (idempotent; apt only when
# something is missing). The CUDA toolkit is not a Debian package: when nvcc is on PATH
# (or in /usr/local/cuda/bin) the CUDA backend is built too.
set -euo pipefail

packages=(
  build-essential cmake ninja-build pkg-config git python3
  libzmq3-dev libsodium-dev libprotobuf-c-dev protobuf-c-compiler
  libopenblas-dev libopenblas-openmp-dev libpcre2-dev libutf8proc-dev
  libmicrohttpd-dev libxxhash-dev python3-venv
)
# What only the tests use: tests/test_deploy.sh parses the Kubernetes manifests (python3-yaml)
# and runs systemd-analyze verify on the units (systemd). The image build (Dockerfile) sets
# KVSERVE_DEPS_BUILD_ONLY=1 and goes without.
if [ "${KVSERVE_DEPS_BUILD_ONLY:-0}" != 1 ]; then
  packages+=(python3-yaml systemd)
fi

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi
echo "install-deps: installing ${missing[*]}" >&2
SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
