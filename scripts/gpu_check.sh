#!/usr/bin/env bash
# The GPU path in one command, on a machine with a GPU (under 5 minutes):
#   scripts/gpu_check.sh          # trainer=gpu
#   scripts/gpu_check.sh --cpu    # the same steps, tiny, on CPU (CI runs this)
# Steps: the smoke sweep (8 jobs, all must complete); one freeze=none and one cached
# freeze=base job of a paper backbone on generated images (224 px on GPU); a 2-worker
# local_gpus sweep; bench_gpu.py (job.py vs a plain loop, syncs per step) and its cached-input
# path (bench_gpu.py --inputs folder: decoding vs the input cache). Prints one summary
# table and exits non-zero if any step failed. Work files: a temp dir (kept, path printed).
set -uo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
# The project's environment (make's .venv) unless PYTHON names another interpreter.
if [[ -z "${PYTHON:-}" && -x "$ROOT/.venv/bin/python" ]]; then PYTHON="$ROOT/.venv/bin/python"; fi
PY="${PYTHON:-$(command -v python3 || echo python)}"
export PYTHONPATH="$ROOT/src${PYTHONPATH:+:$PYTHONPATH}"
WORK="$(mktemp -d "${TMPDIR:-/tmp}/gpu_check.XXXXXX")"
cd "$WORK" || exit 1

if [[ "${1:-}" == "--cpu" ]]; then
  MODE=cpu TRAINER=trainer=cpu BACKBONE=mobilenetv2_100 SIZE=64 PER_CLASS=10
  BENCH=(--cpu --repeats 1) SHARE=()
else
  MODE=gpu TRAINER=trainer=gpu BACKBONE=resnet50 SIZE=224 PER_CLASS=64
  BENCH=(--models resnet50 --repeats 3)
  GPUS="$(nvidia-smi -L 2>/dev/null | grep -c '^GPU ')"
  # One GPU: the two workers share it (asked for explicitly, as the launcher requires).
  if [[ "${GPUS:-0}" -lt 2 ]]; then SHARE=(hydra.callbacks.gpu_placement.jobs_per_gpu=2); else SHARE=(); fi
fi

: > steps.tsv
step() {  # step NAME DIR COMMAND...: run with a time limit, log, note rc and seconds
  local name=$1 dir=$2 start rc
  shift 2
  start=$(date +%s)
  timeout 280 "$@" > "$name.log" 2>&1
  rc=$?
  printf '%s\t%s\t%s\t%s\n' "$name" "$rc" "$(( $(date +%s) - start ))" "$dir" >> steps.tsv
  [[ $rc -eq 0 ]] || { echo "step $name failed (rc $rc); last lines of $WORK/$name.log:"; tail -5 "$name.log"; }
}

TRAIN=("$PY" "$ROOT/scripts/train.py")
step smoke outputs/multirun/check_smoke "${TRAIN[@]}" -m experiment=smoke "$TRAINER" name=check_smoke

"$PY" - "$PER_CLASS" "$SIZE" <<'EOF'
import sys
from pathlib import Path

import numpy as np
from PIL import Image

per_class, size = int(sys.argv[1]), int(sys.argv[2])
rng = np.random.default_rng(0)
for c, name in enumerate(("cat", "dog")):
    folder = Path("images/train") / name
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(per_class):  # two classes that differ in brightness: learnable
        pixels = rng.integers(0, 128, (size, size, 3)) + 100 * c
        Image.fromarray(pixels.clip(0, 255).astype(np.uint8)).save(folder / f"{i}.png")
EOF
JOB=(model="$BACKBONE" model.weights=random data=imagefolder data.root="$WORK/images"
     data.classes=null data.image_size="$SIZE" data.batch_size=16 "$TRAINER" trainer.max_epochs=1
     paths.cache_dir="$WORK/cache" trainer.enable_progress_bar=false)
step freeze_none runs/none "${TRAIN[@]}" "${JOB[@]}" freeze=none hydra.run.dir=runs/none
step freeze_base runs/base "${TRAIN[@]}" "${JOB[@]}" freeze=base hydra.run.dir=runs/base
step local_gpus outputs/multirun/check_local "${TRAIN[@]}" -m experiment=smoke "$TRAINER" \
  name=check_local hydra/launcher=local_gpus hydra.launcher.n_jobs=2 "${SHARE[@]}"
step bench - "$PY" "$ROOT/scripts/bench_gpu.py" "${BENCH[@]}"
step bench_inputs - "$PY" "$ROOT/scripts/bench_gpu.py" "${BENCH[@]}" --inputs folder

"$PY" - "$MODE" <<'EOF'
import json
import sys
from pathlib import Path

mode = sys.argv[1]
if mode == "gpu":
    import torch

    print(f"device: {torch.cuda.get_device_name()} (torch {torch.__version__})")
print(f"{'step':12s} {'rc':>3s} {'s':>4s}  {'records':>9s}  notes")
ok = True
for line in Path("steps.tsv").read_text().splitlines():
    name, rc, seconds, where = line.split("\t")
    records = [json.loads(p.read_text()) for p in Path(where).rglob("result.json")] \
        if where != "-" else []
    done = sum(r["status"] == "completed" for r in records)
    notes = []
    for r in records[:1]:
        dev = r.get("device") or {}
        notes.append(f"{dev.get('type')}/{dev.get('precision')}")
        if r["run"]["freeze"] == "base":
            notes.append(f"cached_features={r.get('cached_features')}")
        if where.startswith("runs/"):
            notes.append(f"{r['timing']['train_samples_per_s']:.0f} samples/s, "
                         f"peak {r['timing'].get('peak_mem_mb', 0):.0f} MiB")
        if r.get("error"):
            notes.append(r["error"][:80])
    expected = {"smoke": 8, "local_gpus": 8}.get(name, 1 if where != "-" else 0)
    good = rc == "0" and done == expected
    ok &= good
    shown = f"{done}/{len(records)}" if where != "-" else "-"
    print(f"{name:12s} {rc:>3s} {seconds:>4s}  {shown:>9s}  {'; '.join(notes)}"
          + ("" if good else "  <-- FAILED"))
print()
for log in ("bench.log", "bench_inputs.log"):
    bench = Path(log).read_text().splitlines()
    print("\n".join(line for line in bench if not line.startswith(("[", " "))
                    and "warn" not in line.lower()))
    print()
sys.exit(0 if ok else 1)
EOF
rc=$?
echo "work files: $WORK"
exit $rc
