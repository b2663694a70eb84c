#!/usr/bin/env bash
# The first thing to run on a machine with a GPU (one H100/H200; under 8 minutes in all).
#
# Four checks of the paths only a GPU takes, each under its own timeout so one failure does not
# stop the others; one JSON line per check on stdout, then a summary line:
#   dit_step       LightningDiT-XL/1 training step, bf16 autocast, torch.compile (inductor, the
#                  paper default), batch 64: s/step and MFU
#   zero2_nccl     a 1-GPU Ray Train + DeepSpeed ZeRO-2 bf16 run (NCCL): steps/s, peak memory
#   sweep_use_gpu  a 1-point micro sweep with `resources.use_gpu: yes`, every stage
#   eval_generate  sample generation throughput (paper preset: XL/1, CFG, decoder; 25 steps)
#
# Run from the repository root, with the project venv that `./dev` creates:
#     bash benchmarks/gpu_check.sh > gpu_check.jsonl
# Each check's full output stays in $GPU_CHECK_DIR (default: a new temporary directory).
set -u -o pipefail

PYTHON=${PYTHON:-.venv/bin/python}
WORK=${GPU_CHECK_DIR:-$(mktemp -d -t gpu-check-XXXXXX)}
mkdir -p "$WORK"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
failures=0

# The JSON line of one finished check: {"check", "ok", "rc", "seconds", "result" (the
# command's JSON output, whole or its last JSON line), "error" (timeout, or the output's tail)}.
cat >"$WORK/report.py" <<'PY'
import json, sys, time

name, rc, start, out, err, limit = sys.argv[1:]
rc = int(rc)
text = open(out, errors="replace").read()
result = None
for candidate in [text, *reversed(text.strip().splitlines())]:
    try:
        result = json.loads(candidate)
        break
    except ValueError:
        continue
line = {
    "check": name,
    "ok": rc == 0,
    "rc": rc,
    "seconds": round(time.time() - float(start), 1),
    "result": result,
}
if rc in (124, 137):
    line["error"] = f"timed out after {limit} s"
elif rc != 0:
    tail = (open(err, errors="replace").read() + text).strip().splitlines()[-12:]
    line["error"] = "\n".join(tail)
print(json.dumps(line), flush=True)
PY

# The micro sweep, then what it left: stage markers and the generator's final metrics (which
# carry `gpu_mem_peak_mib` only when the Train worker ran on a GPU).
cat >"$WORK/sweep_check.py" <<'PY'
import glob, json, subprocess, sys

python, space, storage = sys.argv[1:]
run = subprocess.run(
    [python, "-m", "orchestrator.frontier", "--space", space, "--storage", storage],
    capture_output=True, text=True,
)
sys.stderr.write(run.stdout[-4000:] + run.stderr[-4000:])
stages = ("tokenizers", "tokenizer_eval", "caches", "generators", "generator_eval")
done = {s: len(glob.glob(f"{storage}/{s}/*/DONE.json")) for s in stages}
summaries = glob.glob(f"{storage}/generators/*/export/summary.json")
final = json.load(open(summaries[0]))["final_metrics"] if summaries else {}
print(json.dumps({
    "exit": run.returncode,
    "done": done,
    "generator_gpu_mem_peak_mib": final.get("gpu_mem_peak_mib"),
    "generator_samples_per_s": final.get("samples_per_s"),
}))
sys.exit(run.returncode or (0 if "gpu_mem_peak_mib" in final else 1))
PY

cat >"$WORK/gpu_micro.yaml" <<'YAML'
name: gpu_micro
preset: micro
base:
  resources: {use_gpu: "yes"}
search:
  grid:
    tokenizer.vf.foundation: [standin]
YAML

# run_check NAME TIMEOUT_S COMMAND...: COMMAND under its own timeout, then its JSON line.
run_check() {
    local name=$1 limit=$2
    shift 2
    local out="$WORK/$name.out" err="$WORK/$name.err" start rc
    start=$(date +%s.%N)
    timeout --kill-after=15 "$limit" "$@" >"$out" 2>"$err"
    rc=$?
    "$PYTHON" "$WORK/report.py" "$name" "$rc" "$start" "$out" "$err" "$limit"
    [ "$rc" -eq 0 ] || failures=$((failures + 1))
}

# 1. The paper generator's step as the paper trains it: XL/1 on 16x16x32 latents, bf16,
#    compiled (the warm-up steps absorb the compilation).
run_check dit_step 120 "$PYTHON" benchmarks/dit_step.py --device cuda \
    --models LightningDiT-XL/1 --batch-sizes 64 --bf16 --compile --steps 10 --warmup 3

# 2. The trainer path on a GPU: Ray Train picks NCCL, DeepSpeed ZeRO-2 with bf16 autocast.
run_check zero2_nccl 100 "$PYTHON" benchmarks/train_overhead.py --gpu-zero2 \
    --gpu-model LightningDiT-B/1 --gpu-steps 60 --gpu-batch 64

# 3. The whole pipeline with the GPU required: one micro point, every stage.
run_check sweep_use_gpu 190 "$PYTHON" "$WORK/sweep_check.py" "$PYTHON" \
    "$WORK/gpu_micro.yaml" "$WORK/sweep"

# 4. Evaluation's expensive half on the GPU: sampling + decoding images/s and the FID-50K
#    projection, at 25 Euler steps instead of 250 (the time scales with the steps).
run_check eval_generate 60 "$PYTHON" benchmarks/eval_throughput.py --generation --device cuda \
    --gen-num-steps 25 --gen-batch-size 64 --gen-batches 1

echo "{\"check\": \"summary\", \"failed\": $failures, \"outputs\": \"$WORK\"}"
[ "$failures" -eq 0 ]
