#!/usr/bin/env bash
# Every benchmark of ours against the released formulation at the paper's sizes, on one lent GPU, in a few
# minutes; the tables go between the gpu-results markers of benchmarks/RESULTS.md (and to $OUT if set).
#
#   benchmarks/run_gpu.sh                 # CUDA machine: ViT-B-32, VGG16 g at 299², BLIP-base (random weights)
#   CPU_SMOKE=1 benchmarks/run_gpu.sh     # tiny models on the CPU: proves the script runs end to end; writes
#                                         # a copy of RESULTS.md in a temporary folder, never the real one
#
# Offline (random weights, nothing downloaded). Each part has its own time limit; a part that fails or runs
# out of time is recorded as such and the others still run. PYTHON picks the interpreter (default: the
# repository's .venv if present, else python); RESULTS_FILE the file written.
set -uo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
cd "$ROOT"
PY="${PYTHON:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python )}"
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}" HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
export MALLOC_MMAP_THRESHOLD_=65536   # CPU peak-RSS deltas: large tensors mapped and unmapped each time
WORK="$(mktemp -d)"
BLOCK="$WORK/gpu-results.md"
BENCH=(benchmarks/bench_vs_reference.py)

if [ "${CPU_SMOKE:-0}" = 1 ]; then
  COMMON=(--size tiny --device cpu --threads 1)
  TRAIN_B=(--batches 2); TRAIN_SCALE=(--batches 1 2 4); TRAIN_REPEATS=2
  WWBL_ONE=(--max-proposals 12 --images 1); WWBL_PROPS=(--max-proposals 5 10 --images 1)
  WWBL_IMAGES=(--max-proposals 5 --images 1 2); WWBL_REPEATS=1
  T_TRAIN=120; T_WWBL=180
  RESULTS="${RESULTS_FILE:-$WORK/RESULTS.md}"
  cp benchmarks/RESULTS.md "$WORK/RESULTS.md"
  KIND="CPU smoke run (tiny models; numbers mean nothing)"
else
  if ! "$PY" -c "import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)"; then
    echo "run_gpu.sh: torch sees no CUDA device (CPU_SMOKE=1 runs the tiny CPU version)" >&2
    exit 1
  fi
  COMMON=(--size paper --device cuda --threads 4)
  TRAIN_B=(--batches 32); TRAIN_SCALE=(--batches 1 2 4 8 16 32); TRAIN_REPEATS=5
  WWBL_ONE=(--max-proposals 120 --images 1); WWBL_PROPS=(--max-proposals 10 20 50 100 --images 1)
  WWBL_IMAGES=(--max-proposals 50 --images 1 2 4); WWBL_REPEATS=2
  T_TRAIN=110; T_WWBL=150
  RESULTS="${RESULTS_FILE:-benchmarks/RESULTS.md}"
  KIND="$("$PY" -c "import torch; print(torch.cuda.get_device_name(0))"), $(nvidia-smi --query-gpu=driver_version,memory.total --format=csv,noheader 2>/dev/null | head -1)"
fi

{
  echo "## GPU run — $(date -u '+%Y-%m-%d %H:%M UTC')"
  echo
  echo "Device: $KIND; $("$PY" -c "import torch; print('torch', torch.__version__, '| CUDA', torch.version.cuda, '| cuDNN TF32', torch.backends.cudnn.allow_tf32, '| matmul TF32', torch.backends.cuda.matmul.allow_tf32)"); $(nproc) CPU cores."
  echo "Written by \`benchmarks/run_gpu.sh\`; ratios are within one run (formulations interleaved, medians)."
  echo
} > "$BLOCK"

part() {  # part SECONDS TITLE ARGS...: one benchmark, its tables appended to the block
  local limit="$1" title="$2"; shift 2
  echo "== $title (limit ${limit}s)" >&2
  local start=$SECONDS
  timeout --signal=TERM --kill-after=10 "$limit" "$PY" "${BENCH[@]}" "$@" --markdown "$BLOCK" >&2
  local rc=$?
  if [ $rc -ne 0 ]; then
    if [ $rc -eq 124 ] || [ $rc -eq 137 ]; then
      printf '\n**%s: did not finish within %s s** (`%s`).\n\n' "$title" "$limit" "$*" >> "$BLOCK"
    else
      printf '\n**%s: failed with exit status %s** (`%s`; see the log).\n\n' "$title" "$rc" "$*" >> "$BLOCK"
    fi
  fi
  echo "== $title: exit $rc after $((SECONDS - start)) s" >&2
}

part "$T_TRAIN" "training, bf16-mixed" train "${COMMON[@]}" "${TRAIN_B[@]}" --precision bf16-mixed \
  --repeats "$TRAIN_REPEATS" --flops
part "$T_TRAIN" "training, fp32" train "${COMMON[@]}" "${TRAIN_B[@]}" --precision 32-true \
  --repeats "$TRAIN_REPEATS" --flops
part "$T_TRAIN" "training vs batch size, bf16-mixed" train "${COMMON[@]}" "${TRAIN_SCALE[@]}" \
  --precision bf16-mixed --repeats "$TRAIN_REPEATS"
part "$T_WWBL" "WWbL at chunk 120" wwbl "${COMMON[@]}" "${WWBL_ONE[@]}" --chunk 120 --repeats "$WWBL_REPEATS"
part "$T_WWBL" "WWbL vs proposal count" wwbl "${COMMON[@]}" "${WWBL_PROPS[@]}" --chunk 120 --repeats "$WWBL_REPEATS"
part "$T_WWBL" "WWbL vs images per call" wwbl "${COMMON[@]}" "${WWBL_IMAGES[@]}" --chunk 120 --repeats "$WWBL_REPEATS"

"$PY" benchmarks/write_results.py "$BLOCK" --results "$RESULTS" || exit 1
if [ -n "${OUT:-}" ]; then
  cp "$RESULTS" "$OUT/RESULTS.md" && cp "$BLOCK" "$OUT/gpu-results.md"
fi
echo "results: $RESULTS" >&2
