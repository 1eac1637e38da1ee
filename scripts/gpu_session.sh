#!/usr/bin/env bash
# A lent GPU session's work, prepared so that no device minute goes to typing (docs/results.md says why and
# in what order; ../shared/device/README.md how the device tool works). Three stages:
#
#   bash scripts/gpu_session.sh pack    # here, once: the data in two chunks (.devdata/a, .devdata/b) and
#                                       # the Hydra wheels (.whl); all git-ignored, they travel by `carry`
#   bash scripts/gpu_session.sh bench   # device call 1, carry [".devdata/a", ".whl"]: unpack chunk a;
#                                       # make bench's command
#   bash scripts/gpu_session.sh fast    # device call 2 at once, carry [".devdata/b", ".whl"]: unpack chunk
#                                       # b; tune experiment=fast on validation; 3 seeds of it, each tested
#
# Extra arguments of `fast` are train.py overrides for the grid (a CPU rehearsal makes it tiny); the seeds
# inherit them from the job they repeat. Each step has its own time limit inside the call's 600 s, and what
# it wrote is copied to $OUT even if it was cut short. The runs themselves stay in /tmp/runs on the machine
# (no checkpoints travel back).
set -uo pipefail
cd "$(dirname "$0")/.."
stage=${1:?usage: bash scripts/gpu_session.sh pack|bench|fast [grid overrides...]}
shift
PYTHON=${PYTHON:-python3}
# Outside the repository: the device tool removes the ignored paths a call does not carry.
DATA=${SERES_DATA_DIR:-/tmp/cifar}
RUNS=${RUNS:-/tmp/runs}
# Seconds each step may take (estimates for an H100/H200: a cold compilation of one to two minutes, about
# 15 s of training a run); a slower machine, such as a CPU rehearsal, raises them.
BENCH_LIMIT=${BENCH_LIMIT:-420} GRID_LIMIT=${GRID_LIMIT:-330} SEEDS_LIMIT=${SEEDS_LIMIT:-200}
export PYTHONUNBUFFERED=1

# The chunks that arrived become official .bin files (MD5-checked); Hydra's wheels go on the path.
prepare_machine() {
    for chunk in .devdata/*/; do
        [ -f "$chunk/cifar10_chunks.py" ] && "$PYTHON" "$chunk/cifar10_chunks.py" unpack-present "$chunk" \
            "$DATA/cifar-10-batches-bin"
    done
    if compgen -G ".whl/*.whl" > /dev/null; then
        "$PYTHON" -m pip install -q --upgrade --no-index --no-deps --target /tmp/site .whl/*.whl || exit 1
        export PYTHONPATH=/tmp/site:$PWD
    fi
}

# Copy each run's small files (metrics, per-epoch table, log, config) and the summaries to $OUT/NAME.
keep() {
    local from=$1 name=$2
    mkdir -p "$OUT/$name"
    (cd "$from" 2>/dev/null && find . \( -name metrics.json -o -name epochs.csv -o -name train.log -o \
        -name console.log -o -name overrides.yaml -o -name 'summary.*' -o -name 'seeds.*' \) \
        -exec cp --parents {} "$OUT/$name/" \;)
}

case $stage in
pack)
    # From this machine's copy of the data (data/ unless SERES_DATA_DIR says otherwise).
    "$PYTHON" ../shared/device/cifar10_chunks.py pack "${SERES_DATA_DIR:-data}/cifar-10-batches-bin" \
        .devdata && rm -rf .whl && cp -r ../shared/device/wheels .whl && du -sh .devdata/a .devdata/b .whl
    ;;
bench)
    : "${OUT:?set OUT: on the device the tool sets it; to rehearse, any directory}"
    prepare_machine
    timeout "$BENCH_LIMIT" "$PYTHON" -m seres.bench --json "$OUT/bench.json" 2>&1 | tee "$OUT/bench.log"
    ;;
fast)
    : "${OUT:?set OUT: on the device the tool sets it; to rehearse, any directory}"
    prepare_machine
    grid=$RUNS/fast-grid
    # The grid never tests; the choice is made on validation (conf/hparams_search/fast_grid.yaml).
    timeout "$GRID_LIMIT" "$PYTHON" train.py -m experiment=fast hparams_search=fast_grid "data.root=$DATA" \
        "hydra.sweep.dir=$grid" "$@" > "$OUT/fast-grid.log" 2>&1
    echo "grid exit $?"
    keep "$grid" fast-grid
    # The chosen job's overrides (data.root and the extra arguments among them), with new seeds, each tested;
    # one at a time, so that each time to 94% is that of a run alone. The grid's runs should have filled
    # torch's on-disk compilation cache for this network and batch.
    timeout "$SEEDS_LIMIT" "$PYTHON" -m seres.seeds --out "$RUNS/fast" --seeds 0 1 2 --parallel 1 \
        --from-sweep "$grid" 2>&1 | tee "$OUT/fast-seeds.log"
    keep "$RUNS/fast" fast
    ;;
*)
    echo "unknown stage '$stage': use pack, bench or fast" >&2
    exit 2
    ;;
esac
