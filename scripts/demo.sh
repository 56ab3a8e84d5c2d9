#!/usr/bin/env bash
# The demo: installs dependencies, builds, and generates text with the shared stories260K
# model (or, when ../shared/models is absent, a synthetic tiny model).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
cd "$KVSERVE_ROOT"
bash scripts/install-deps.sh
cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=Release -DKVSERVE_CUDA="$KVSERVE_CUDA" >/dev/null
ninja -C build -j "$(nproc)" >/dev/null
model="$KVSERVE_TEST_MODELS/stories260K"
if [ ! -f "$model/config.json" ]; then
  model=build/models/tiny
  [ -f "$model/config.json" ] || build/bin/kvctl model synth --shape tiny --dtype f32 --out "$model"
fi
prompt="${1:-Once upon a time}"
echo "model: $model" >&2
echo "prompt: $prompt" >&2
printf '%s' "$prompt"
build/bin/kvctl generate --local --model "$model" --max-tokens "${MAX_TOKENS:-200}" -- "$prompt"
echo
