# Shared by invert_dir.sh, privatize_dir.sh and sweep_epsilon.sh (sourced, not run).
# shellcheck shell=bash disable=SC2034  # LP_LAUNCHER is read by the scripts that source this file
#
# lp_count_gpus            -> prints the number of GPUs nvidia-smi lists (1 when none)
# lp_launcher NPROC        -> sets the array LP_LAUNCHER: `python -m` for one process, else
#                             `python -m torch.distributed.run ... -m` (one node, or several with
#                             NNODES/NODE_RANK/MASTER_ADDR/MASTER_PORT)
# lp_run LOG CMD...        -> runs CMD with stdout+stderr shown and logged, forwards SIGTERM/SIGINT
#                             to it (so a killed script stops latentpriv cleanly), and returns CMD's
#                             exit status. LOG (OUTDIR/logs/NAME.log) is appended to when CMD ends, and
#                             only if OUTDIR exists by then: a command that fails at once (bad option,
#                             missing input) leaves nothing behind. While it runs the log is a temp file.

lp_die() {
    echo "$(basename "$0"): $*" >&2
    exit 2
}

lp_count_gpus() {
    local n
    n=$( (nvidia-smi -L 2>/dev/null || true) | grep -c '^GPU' || true)
    if [[ -z $n || $n -lt 1 ]]; then
        n=1
    fi
    echo "$n"
}

lp_check_count() {
    [[ $2 =~ ^[1-9][0-9]*$ ]] || lp_die "$1 must be a positive integer, got '$2'"
}

lp_launcher() {
    local nproc=$1
    local python=${PYTHON:-python3}
    local nnodes=${NNODES:-1}
    lp_check_count NNODES "$nnodes"
    if [[ $nnodes -gt 1 ]]; then
        [[ -n ${NODE_RANK:-} ]] || lp_die "NNODES=$nnodes: set NODE_RANK (0..$((nnodes - 1))) on every node"
        [[ -n ${MASTER_ADDR:-} ]] || lp_die "NNODES=$nnodes: set MASTER_ADDR to the address of node 0"
        LP_LAUNCHER=("$python" -m torch.distributed.run --nnodes="$nnodes" --node_rank="$NODE_RANK"
                     --master_addr="$MASTER_ADDR" --master_port="${MASTER_PORT:-29500}"
                     --nproc_per_node="$nproc" -m)
    elif [[ $nproc -gt 1 ]]; then
        LP_LAUNCHER=("$python" -m torch.distributed.run --standalone --nproc_per_node="$nproc" -m)
    else
        LP_LAUNCHER=("$python" -m)
    fi
    export OMP_NUM_THREADS=${OMP_NUM_THREADS:-4}
}

lp_run() {
    local log=$1
    shift
    local tmp
    tmp=$(mktemp "${TMPDIR:-/tmp}/latentpriv-log.XXXXXX")
    echo "# $(date -Is) on $(hostname): $* (log: $tmp until the end, then $log)" | tee -a "$tmp" >&2
    local status=0 child termed=0
    "$@" > >(tee -a "$tmp") 2>&1 &
    child=$!
    # shellcheck disable=SC2064  # expand $child now: the trap must signal this very process
    trap "termed=1; kill -TERM $child 2>/dev/null || true" TERM INT
    while true; do
        status=0
        wait "$child" || status=$?
        kill -0 "$child" 2>/dev/null || break   # a trap interrupted wait: wait again for the exit
    done
    trap - TERM INT
    # torchrun answers a SIGTERM with status 1 even when every rank stopped cleanly with 143: report what
    # happened (terminated, 128 + 15), as a single-process run does
    if (( termed && status != 0 )); then
        status=143
    fi
    if [[ -d $(dirname "$(dirname "$log")") ]]; then
        echo "# $(date -Is) exit status $status; log: $log" | tee -a "$tmp" >&2
        mkdir -p "$(dirname "$log")"
        cat "$tmp" >> "$log"
    else
        echo "# $(date -Is) exit status $status; nothing was written, so no log is kept" >&2
    fi
    rm -f "$tmp"
    return "$status"
}

# usage [STATUS]: print the calling script's header comment (line 2 up to `set -euo`) and exit STATUS:
# 0 (asked for with -h/--help: to stdout) or 2 (wrong arguments: to stderr, the default).
usage() {
    local status=${1:-2}
    if [[ $status -eq 0 ]]; then
        sed -n '2,/^set -euo/p' "$0" | sed -e '/^set -euo/d' -e 's/^# \{0,1\}//'
    else
        sed -n '2,/^set -euo/p' "$0" | sed -e '/^set -euo/d' -e 's/^# \{0,1\}//' >&2
    fi
    exit "$status"
}

# lp_split_count ARGS...: an optional leading count (processes or GPUs), then an optional "--"; sets
# LP_COUNT (empty when no count was given) and LP_REST (the rest, passed on to latentpriv).
lp_split_count() {
    LP_COUNT=""
    if [[ $# -gt 0 && $1 != "--" ]]; then
        LP_COUNT=$1
        shift
    fi
    if [[ $# -gt 0 && $1 == "--" ]]; then
        shift
    fi
    LP_REST=("$@")
}
