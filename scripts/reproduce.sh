#!/usr/bin/env bash
# Reproduce the published numbers (docs/benchmarks.md, docs/results.md) on a machine of your own:
#
#   scripts/reproduce.sh bench         # the throughput benchmark: results/bench/bench.json and bench.log
#   scripts/reproduce.sh fast          # tune experiment=fast on validation, then 3 seeds of it, each tested
#   scripts/reproduce.sh best          # experiment=best, 3 seeds (200 epochs each)
#   scripts/reproduce.sh seed_paper    # the paper's recipe with clean evaluation, 3 seeds
#
# Options: --data DIR (CIFAR-10, default data/; `make data` fills it), --out DIR (default results/TARGET),
# --seeds 0,1,2; anything else is a train.py override (e.g. trainer.devices=2) given to every run, or for
# bench a seres.bench option. Rerunning the same command finishes an interrupted one: completed runs are
# skipped, interrupted ones resume from their last.ckpt. Each multirun's summary.md has every seed's numbers
# and their mean ± std.
set -euo pipefail
cd "$(dirname "$0")/.."
usage="usage: scripts/reproduce.sh bench|fast|best|seed_paper [--data DIR] [--out DIR] [--seeds 0,1,2] [...]"
target=${1:-}
[ -n "$target" ] || { echo "$usage" >&2; exit 2; }
shift
data=data out=results/$target seeds=0,1,2 extra=()
while [ $# -gt 0 ]; do
    case $1 in
    --data) data=${2:?--data needs a directory}; shift 2 ;;
    --out) out=${2:?--out needs a directory}; shift 2 ;;
    --seeds) seeds=${2:?--seeds needs a list such as 0,1,2}; shift 2 ;;
    *) extra+=("$1"); shift ;;
    esac
done
python=${PYTHON:-$([ -x .venv/bin/python ] && echo .venv/bin/python || echo python3)}
export PYTHONUNBUFFERED=1
mkdir -p "$out"

seeds_of() {  # seeds_of SWEEP_DIR OVERRIDES...: one recipe over the seeds, each run tested once
    local sweep=$1
    shift
    "$python" train.py -m "$@" "seed=$seeds" "hydra.sweep.dir=$sweep"
}

case $target in
bench)
    "$python" -m seres.bench --json "$out/bench.json" "${extra[@]}" 2>&1 | tee "$out/bench.log"
    ;;
fast)
    # The grid trains without testing (test=false); the job chosen on validation is carried to the seeds,
    # with data.root and the extra overrides among its own.
    "$python" train.py -m experiment=fast hparams_search=fast_grid "data.root=$data" "${extra[@]}" \
        "hydra.sweep.dir=$out/grid"
    chosen=$("$python" -m seres.launch.sweep chosen "$out/grid")
    eval "chosen=($chosen)"  # printed shell-quoted by seres.launch.sweep
    seeds_of "$out/seeds" "${chosen[@]}"
    ;;
best | seed_paper)
    seeds_of "$out" "experiment=$target" "data.root=$data" "${extra[@]}"
    ;;
*)
    echo "unknown target '$target'; $usage" >&2
    exit 2
    ;;
esac
echo "results in $out"
