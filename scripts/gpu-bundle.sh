#!/usr/bin/env bash
# Packs the service for a GPU machine that cannot build it: the GPU machine has the CUDA
# toolkit but not libzmq or protobuf-c, and no network to fetch them. Run here (after
# scripts/install-deps.sh); it builds the CUDA configuration, then writes
#   .gpu-bundle/bundle.tar.xz: bin/ (kv-router, kv-prefill, kv-decode, test_workers_pair,
#                              test_cluster) and lib/ (every shared library they load that
#                              is neither glibc's nor CUDA's, which the GPU machine has)
#   .gpu-models/               the shared test models the tests read (stories260K)
# Both are ignored by git (.gitignore); carry them to the GPU machine, where scripts/gpu-check.sh
# unpacks the bundle and runs the worker pair and cluster tests on the real GPU (KV over
# cuda-ipc, device sampling, faults). Same CUDA major version on both machines (13 here).
# Environment: KVSERVE_BUNDLE_BUILD (build dir, default build-bundle).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
source "$here/env.sh"
cd "$KVSERVE_ROOT"

build="${KVSERVE_BUNDLE_BUILD:-build-bundle}"
bins=(kv-router kv-prefill kv-decode test_workers_pair test_cluster)
cmake -S . -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release -DKVSERVE_CUDA=ON >/dev/null
ninja -C "$build" "${bins[@]}"

out=.gpu-bundle
stage="$(mktemp -d)"
trap 'rm -rf "$stage"' EXIT
mkdir -p "$stage/bin" "$stage/lib" "$out"
for b in "${bins[@]}"; do
  cp "$build/bin/$b" "$stage/bin/"
done
# glibc, the compiler runtime the GPU machine's system has anyway, and CUDA's own libraries
# (its toolkit's, matching its driver) stay behind.
skip='^(linux-vdso|ld-linux|libc|libm|libdl|libpthread|librt|libresolv|libstdc\+\+|libgcc_s|libcuda|libcudart|libcublas|libcublasLt|libnvidia)[.-]'
for b in "${bins[@]}"; do
  ldd "$build/bin/$b" | awk '$2 == "=>" && $3 ~ /^\// {print $1, $3}'
done | sort -u | while read -r name path; do
  if ! [[ "$name" =~ $skip ]]; then cp -L "$path" "$stage/lib/$name"; fi
done
tar -C "$stage" -cJf "$out/bundle.tar.xz" bin lib
echo "bundle: $out/bundle.tar.xz ($(du -h "$out/bundle.tar.xz" | cut -f1)); libraries: $(ls "$stage/lib" | tr '\n' ' ')"

models="$KVSERVE_TEST_MODELS"
mkdir -p .gpu-models
cp "$models/README.md" .gpu-models/
cp -r "$models/stories260K" .gpu-models/
echo "models: .gpu-models ($(du -sh .gpu-models | cut -f1))"
echo "carry to the GPU machine: .gpu-bundle .gpu-models"
