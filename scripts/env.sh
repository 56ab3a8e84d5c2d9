# Sourced by the scripts: puts a CUDA toolkit that is installed but not on PATH on it.
if ! command -v nvcc >/dev/null 2>&1 && [ -x /usr/local/cuda/bin/nvcc ]; then
  export PATH="/usr/local/cuda/bin:$PATH"
fi
KVSERVE_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export KVSERVE_ROOT
# ctest and the demo look for the shared test models next to the checkout.
export KVSERVE_TEST_MODELS="${KVSERVE_TEST_MODELS:-$KVSERVE_ROOT/../shared/models}"
if command -v nvcc >/dev/null 2>&1; then KVSERVE_CUDA=ON; else KVSERVE_CUDA=OFF; fi
export KVSERVE_CUDA
