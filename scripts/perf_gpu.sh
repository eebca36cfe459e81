#!/usr/bin/env bash
# The speed benchmark on one CUDA GPU (H100/H200 class) as one prepared pass; see docs/performance.md.
#
#   scripts/perf_gpu.sh wheels     # HERE (with pip and the package index): fill .whl/ with the carried wheels
#   scripts/perf_gpu.sh run        # THERE (on the GPU machine, repo root, .whl/ carried, $OUT set): one pass
#
# `run` installs the carried wheels with --no-deps into /tmp/site (the image already has torch, torchvision, numpy,
# scipy, matplotlib, pandas, scikit-learn, opencv, onnx, onnxruntime, pytest), then, each phase under its own time
# limit so that one slow phase cannot eat the others, writing into $OUT as it goes (6 files):
#   env.txt          nvidia-smi, versions, each phase's exit status and time
#   pytest.txt       tests/test_perf.py (fast-path correctness on CUDA: graphs, fp16, bf16, TF32, compile; no host
#                    sync in the training step) and tests/test_export.py (TorchScript, torch.export, ONNX)
#   perf_train.json  training steps (classifier, Single, Duo; bf16/fp16 variants) and data loading, 256x256
#   perf_256.json    every method and the fast-path variants at 256x256
#   perf_large.json  512x512 and 1024x1024 (ours, its fast path, the baselines and peers)
#   perf_log.txt     the benchmark's progress lines and tables
# Tables from a JSON, here: PYTHONPATH=. python -m scripts.perf --report perf_256.json
# Budget: the whole `run` stays under ~9.5 minutes (it fits a 10-minute job limit). The phase limits follow the
# H200 run of 2026-11-26 (docs/performance.md): pytest took 46 s, training 115 s, perf_256 164 s, perf_large ~150 s.
#
# Smoke test of the plumbing on a machine without a GPU (tiny sizes, CPU, a few seconds per phase):
#   OUT=/tmp/perf_smoke PY=.venv/bin/python SMOKE=1 scripts/perf_gpu.sh run
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-python3}
if [[ -n "${SMOKE:-}" ]]; then
    DEV=cpu S256=32 SLARGE="32 64" B256="1 2" BLARGE="1 2" B1024="64=1" TB="2" NDATA=4 DATA="--data-images 4 --data-batch-size 2 --dataset-dir /tmp/perf_data"
    FAST256="eager channels_last bf16+channels_last" FASTLARGE="bf16+channels_last" TIME="--min-time 0.01 --max-iters 2 --latency-max-iters 3 --threads 1"
else
    DEV=cuda S256=256 SLARGE="512 1024" B256="1 16 64 256 512" BLARGE="1 8 32 64" B1024="1024=1,4,16"
    TB="32 64 128" NDATA=256 DATA="--data-batch-size 64 --data-images 256 --dataset-dir /tmp/perf_data" TIME="--min-time 0.5 --cudnn-benchmark"
    FAST256="eager cuda_graph bf16+channels_last+cuda_graph fp16+channels_last+cuda_graph bf16+channels_last+compile"
    FASTLARGE="bf16+channels_last+cuda_graph fp16+channels_last+cuda_graph"
fi

WHEELS=(monai==1.6.1 pytorch-ignite==0.5.5 nibabel==5.4.2 pydicom==3.0.2 captum==0.9.0 ttach==0.0.3)

wheels() {
    # Pure-Python wheels (py3-none-any), so the Python version of this machine does not matter; grad-cam ships
    # only an sdist, so it is built into a wheel here.
    mkdir -p .whl
    python3 -m pip download --no-deps --only-binary=:all: -d .whl "${WHEELS[@]}"
    python3 -m pip wheel --no-deps -w .whl grad-cam==1.5.7
    ls -la .whl
}

phase() {  # phase NAME SECONDS CMD...: run CMD with a time limit, never abort the script; pytest logs to
    # $OUT/pytest.txt, the benchmark phases append to $OUT/perf_log.txt (8 files at most come back)
    local name=$1 limit=$2
    shift 2
    local log="$OUT/perf_log.txt"
    [[ $name == pytest ]] && log="$OUT/pytest.txt"
    echo "=== $name (limit ${limit}s): $*" | tee -a "$OUT/env.txt" >>"$log"
    local t0=$SECONDS
    timeout --signal=INT --kill-after=15 "$limit" "$@" >>"$log" 2>&1
    local rc=$?
    echo "=== $name: exit $rc after $((SECONDS - t0))s" | tee -a "$OUT/env.txt" >>"$log"
}

run() {
    : "${OUT:?set OUT to the folder the results go to}"
    mkdir -p "$OUT"
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
        || { echo "wheel install failed" | tee "$OUT/env.txt"; exit 1; }
    export PYTHONPATH="/tmp/site:$PWD" PYTHONUNBUFFERED=1 PYTHONWARNINGS=ignore MLFLOW_DISABLE_TELEMETRY=true
    {
        date -u
        nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv
        "$PY" - <<'EOF'
import platform, torch, monai, ignite
print("python", platform.python_version(), "| torch", torch.__version__, "| cuda", torch.version.cuda,
      "| cudnn", torch.backends.cudnn.version(), "| monai", monai.__version__, "| ignite", ignite.__version__)
if torch.cuda.is_available():
    print("device", torch.cuda.get_device_name(0), torch.cuda.get_device_properties(0))
for m in ("captum", "pytorch_grad_cam", "torchvision", "onnx", "onnxruntime", "onnxscript", "triton"):
    try:
        mod = __import__(m)
        print(m, getattr(mod, "__version__", "?"))
    except Exception as e:
        print(m, "unavailable:", type(e).__name__, e)
EOF
    } >"$OUT/env.txt" 2>&1

    # 2. correctness on CUDA (and export); -x off: every check reports
    phase pytest 70 "$PY" -m pytest tests/test_perf.py tests/test_export.py -q -rs --durations=15 -p no:cacheprovider

    # 3. training steps and data loading at 256x256 (first: the explainer-training target must not be cut off)
    phase perf_train 140 "$PY" -m scripts.perf --device $DEV --sizes $S256 --sections train,data $TIME \
        --train-what classifier,explainer-single,explainer-duo --train-batch-sizes $TB \
        --train-fast bf16+channels_last+fused fp16+channels_last+fused $DATA --out "$OUT/perf_train.json"

    # 4. every method at 256x256, with the fast-path variants (the compile row last: it may be cut off)
    phase perf_256 170 "$PY" -m scripts.perf --device $DEV --sizes $S256 --batch-sizes $B256 --methods all \
        --sections explain --fast $FAST256 --fast-modes single $TIME --latency-max-iters 200 \
        --out "$OUT/perf_256.json"

    # 5. full resolution: 512 and 1024 (whole images, not tiled)
    phase perf_large 160 "$PY" -m scripts.perf --device $DEV --sizes $SLARGE --batch-sizes $BLARGE \
        --batch-sizes-at $B1024 \
        --methods ours-single,ours-duo,ours-single+tta,gradient,gradcam,monai-gradcam,captum-saliency,captum-layergradcam,pytorch-grad-cam \
        --sections explain --fast $FASTLARGE $TIME --latency-max-iters 50 --out "$OUT/perf_large.json"
    ls -la "$OUT"
}

case "${1:-}" in
    wheels) wheels ;;
    run) run ;;
    *) echo "usage: $0 wheels|run   (see docs/performance.md)" >&2; exit 2 ;;
esac
