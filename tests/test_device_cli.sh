#!/usr/bin/env bash
# --device / --precision on kvctl generate --local and the workers. Without a GPU: cuda:N
# exits 2 naming why, auto falls back to the cpu with a warning (and the reference text),
# bf16 on the cpu is refused; so are bad --kv-transport values and GPU transports on the cpu. With one (auto picks cuda:0): cuda:0 in f32 reproduces the
# reference text. Usage: test_device_cli.sh BIN_DIR MODELS_DIR
set -u
bin="$1"
models="${KVSERVE_TEST_MODELS:-$2}"
model="$models/stories260K"
fail=0; checks=0
check() { checks=$((checks + 1)); if ! eval "$2"; then echo "FAIL: $1" >&2; fail=$((fail + 1)); fi; }
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
if [ ! -f "$model/config.json" ]; then
  echo "SKIP: shared models not found" >&2
  exit 77
fi
ref="$model/reference/once_upon_a_time.n256.txt"
gen() { "$bin/kvctl" generate --local --model "$model" --max-tokens 252 "$@" -- "Once upon a time"; }

gen --device auto >"$tmp/out" 2>"$tmp/err"; rc=$?
check "--device auto exits 0" '[ $rc -eq 0 ]'
if grep -q "using the cpu" "$tmp/err"; then
  check "auto on the cpu says why" 'grep -q "no CUDA" "$tmp/err" && grep -q "device=cpu kv_dtype=f32" "$tmp/err"'
  check "auto on the cpu: reference text" '{ printf "Once upon a time"; cat "$tmp/out"; echo; } | cmp -s - "$ref"'
  for d in cuda:0 cuda:1 cuda; do
    gen --device $d >/dev/null 2>"$tmp/err"; rc=$?
    check "kvctl --device $d exits 2 with the reason" '[ $rc -eq 2 ] && grep -q "no CUDA" "$tmp/err"'
  done
  for w in kv-prefill kv-decode; do
    "$bin/$w" --model "$model" --device cuda:0 >/dev/null 2>"$tmp/err"; rc=$?
    check "$w --device cuda:0 exits 2 with the reason" '[ $rc -eq 2 ] && grep -q "cuda:0" "$tmp/err" && grep -q "no CUDA" "$tmp/err"'
    "$bin/$w" --model "$model" --precision bf16 >/dev/null 2>"$tmp/err"; rc=$?
    check "$w --precision bf16 on the cpu exits 2" '[ $rc -eq 2 ] && grep -q "f32 only" "$tmp/err"'
  done
else
  check "auto on a GPU picks cuda:0" 'grep -q "device=cuda:0" "$tmp/err"'
  gen --device cuda:0 --precision f32 >"$tmp/out" 2>"$tmp/err"; rc=$?
  check "cuda:0 f32: reference text" '[ $rc -eq 0 ] && { printf "Once upon a time"; cat "$tmp/out"; echo; } | cmp -s - "$ref"'
  gen --device cuda:0 --precision bf16 >"$tmp/out" 2>"$tmp/err"; rc=$?
  check "cuda:0 bf16 generates" '[ $rc -eq 0 ] && [ -s "$tmp/out" ] && grep -q "kv_dtype=bf16" "$tmp/err"'
  gen --device cuda:99 >/dev/null 2>"$tmp/err"; rc=$?
  check "kvctl --device cuda:99 exits 2" '[ $rc -eq 2 ] && grep -q "cuda:99" "$tmp/err"'
fi
for d in gpu cuda:x "cuda:"; do
  gen --device "$d" >/dev/null 2>"$tmp/err"; rc=$?
  check "kvctl --device '$d' exits 2" '[ $rc -eq 2 ] && grep -q "cpu, auto or cuda:N" "$tmp/err"'
  "$bin/kv-decode" --model "$model" --device "$d" >/dev/null 2>"$tmp/err"; rc=$?
  check "kv-decode --device '$d' exits 2" '[ $rc -eq 2 ] && grep -q "cpu, auto or cuda:N" "$tmp/err"'
done
# --kv-transport: a bad name, and GPU transports on the cpu, exit 2 with the reason.
for w in kv-prefill kv-decode; do
  "$bin/$w" --model "$model" --kv-transport rdma >/dev/null 2>"$tmp/err"; rc=$?
  check "$w --kv-transport rdma exits 2" '[ $rc -eq 2 ] && grep -q "auto, zmq, cuda-ipc or nccl" "$tmp/err"'
  for t in cuda-ipc nccl; do
    "$bin/$w" --model "$model" --kv-transport $t >/dev/null 2>"$tmp/err"; rc=$?
    check "$w --kv-transport $t on the cpu exits 2" '[ $rc -eq 2 ] && grep -q "needs --device cuda:N" "$tmp/err"'
  done
done
"$bin/kvctl" up --model "$model" --kv-transport rdma >/dev/null 2>"$tmp/err"; rc=$?
check "kvctl up --kv-transport rdma exits 2" '[ $rc -eq 2 ] && grep -q "auto, zmq, cuda-ipc or nccl" "$tmp/err"'
for d in "cuda:0,," "gpu" "cuda:0,cpu,cuda:"; do
  "$bin/kvctl" up --model "$model" --devices "$d" >/dev/null 2>"$tmp/err"; rc=$?
  check "kvctl up --devices '$d' exits 2" '[ $rc -eq 2 ] && grep -q "comma-separated" "$tmp/err"'
done
gen --precision fp8 >/dev/null 2>"$tmp/err"; rc=$?
check "kvctl --precision fp8 exits 2" '[ $rc -eq 2 ] && grep -q "f32 or bf16" "$tmp/err"'
gen --precision bf16 >/dev/null 2>"$tmp/err"; rc=$?
if grep -q "f32 only" "$tmp/err"; then check "bf16 on the cpu exits 2" '[ $rc -eq 2 ]'; fi
"$bin/kvctl" generate --device cpu -- hi >/dev/null 2>"$tmp/err"; rc=$?
check "--device without --local exits 2" '[ $rc -eq 2 ] && grep -q "only to --local" "$tmp/err"'
echo "$checks checks, $fail failed" >&2
[ $fail -eq 0 ]
