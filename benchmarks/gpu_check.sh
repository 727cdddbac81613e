#!/usr/bin/env bash
# Everything a short GPU loan should do, in priority order, under one deadline (GPU_BUDGET seconds):
#   1. the tests that need CUDA, and one short `phenossl run` on cuda (AMP, channels_last, tiles on the
#      device): a broken GPU path is found before any benchmark is trusted; then the same run trained and
#      embedded by torchrun on the one GPU (the DDP path: NCCL, DistributedDataParallel, SyncBatchNorm);
#   2. the recipe search on the real BBBC021 crops (benchmarks/recipe_search.py --grid search);
#   2b. CASSLE on real cells (issue 13): context / morphology / dual, with and without, three seeds;
#   3. the GPU speed tables (benchmarks/speed_training.py --device cuda, a reduced case list);
#   4. the paper's grid at 96 px, long training (recipe_search.py --grid paper), as far as time allows.
# Results land in $OUT (the device tool brings them back); copy them to benchmarks/results/ and commit.
#
# Prepare on this machine first (the GPU machine has torch but not pydantic / umap, and no shared data):
#   python3 -m pip download ... -d .whl pydantic pydantic-core annotated-types typing-inspection umap-learn pynndescent \
#       kornia kornia_rs filelock      (the first loan lacked kornia: every augmentation row of its second call failed)
#   .venv/bin/python benchmarks/gpu_data.py pack ../shared/data/bbbc021-crops .gpu
# then run it through the device tool with carry [".whl", ".gpu"]:  bash benchmarks/gpu_check.sh
# Smoke test on a CPU: GPU_SMOKE=1 OUT=/tmp/gpu-out bash benchmarks/gpu_check.sh
set -uo pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-/tmp/gpu-out}"
mkdir -p "$OUT"
exec > >(tee -a "$OUT/log.txt") 2>&1
start=$(date +%s)
deadline=$((start + ${GPU_BUDGET:-520}))
left() { echo $((deadline - $(date +%s))); }
step() { echo; echo "=== $* ($(left) s left) ==="; }
PY="${PYTHON:-python3}"
if [ -d .whl ] && [ -z "${GPU_SMOKE:-}" ]; then
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    && export PYTHONPATH=/tmp/site
fi
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
device=cuda; workers=8; smoke=()
if [ -n "${GPU_SMOKE:-}" ]; then device=cpu; workers=2; smoke=(--smoke); fi

step "machine"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>/dev/null || echo "no nvidia-smi"
"$PY" -c "import torch, numpy, sklearn, pydantic; print('torch', torch.__version__, 'cuda', torch.version.cuda, \
'available', torch.cuda.is_available(), 'numpy', numpy.__version__, 'sklearn', sklearn.__version__)"
"$PY" -c "import kornia, filelock, umap" || echo "MISSING PACKAGES: carry their wheels in .whl (see the top of this script)"

data=/tmp/phenossl-data
if [ -d .gpu ]; then "$PY" benchmarks/gpu_data.py unpack .gpu "$data/bbbc021-crops"; else data=../shared/data; fi
cache=/tmp/phenossl-bench

step "1a. tests that need CUDA"
PHENOSSL_TEST_DEVICE=$device timeout 200 "$PY" -m pytest -q -p no:cacheprovider tests/train/test_cuda.py \
  tests/augment/test_augment_pipeline.py -k "cuda or test_cuda" -W ignore::DeprecationWarning 2>&1 | tail -25

step "1b. one short phenossl run on $device"
timeout 150 "$PY" -m phenossl.cli run examples/synthetic_plate.yaml --set train.epochs=2 \
  --set "train.device=$device" --set output.dir=/tmp/phenossl-gpu-run --overwrite 2>&1 | tail -15
"$PY" - <<'EOF' 2>&1 | tail -5
import json, pandas as pd
h = pd.read_csv("/tmp/phenossl-gpu-run/history.csv")
print("history:", len(h), "steps; cells/s median", round(h["images_per_s"].median(), 1), "; metrics",
      json.load(open("/tmp/phenossl-gpu-run/metrics.json")))
EOF

step "1c. torchrun on one GPU: the DDP path (NCCL, DistributedDataParallel, SyncBatchNorm), then embedding"
timeout 150 "$PY" -m torch.distributed.run --standalone --nproc_per_node 1 -m phenossl train \
  examples/synthetic_plate.yaml --overwrite --set train.epochs=2 --set "train.device=$device" \
  --set output.dir=/tmp/phenossl-gpu-run 2>&1 | tail -8
timeout 100 "$PY" -m torch.distributed.run --standalone --nproc_per_node 1 -m phenossl embed /tmp/phenossl-gpu-run \
  --overwrite 2>&1 | tail -4

budget=$(( $(left) * 50 / 100 ))
step "2. recipe search (budget ${budget} s)"
timeout $((budget + 60)) "$PY" benchmarks/recipe_search.py --grid search --device $device --workers $workers \
  --budget "$budget" --data "$data" --cache-dir "$cache" --partial "$OUT/recipe_search_search.jsonl" \
  --out "$OUT/recipe_search_search.json" "${smoke[@]}" 2>&1 | grep -v Warning | tail -100

budget=$(( $(left) * 40 / 100 ))
step "2b. CASSLE grid (budget ${budget} s)"
timeout $((budget + 60)) "$PY" benchmarks/recipe_search.py --grid cassle --seeds 3 --resolution 96 --epochs 60 \
  --device $device --workers $workers --budget "$budget" --data "$data" --cache-dir "$cache" \
  --partial "$OUT/recipe_search_cassle.jsonl" --out "$OUT/recipe_search_cassle.json" "${smoke[@]}" 2>&1 \
  | grep -v Warning | tail -40

step "3. GPU speed tables"
speed_budget=$(( $(left) * 30 / 100 ))
timeout "$speed_budget" "$PY" benchmarks/speed_training.py --device $device --methods mocov2 simclr \
  --encoders resnet18 --resolutions 96 196 --repeats 3 --warmup 1 --cache-dir "$cache" \
  --out "$OUT/speed_training_gpu.json" "${smoke[@]}" 2>&1 | grep -v Warning | tail -30

budget=$(( $(left) - 40 ))
if [ "$budget" -gt 30 ]; then
  step "4. paper grid at 96 px (budget ${budget} s)"
  timeout $((budget + 30)) "$PY" benchmarks/recipe_search.py --grid paper --device $device --workers $workers \
    --budget "$budget" --data "$data" --cache-dir "$cache" --partial "$OUT/recipe_search_paper.jsonl" \
    --out "$OUT/recipe_search_paper.json" "${smoke[@]}" 2>&1 | grep -v Warning | tail -40
fi
step "done"
ls -la "$OUT"
