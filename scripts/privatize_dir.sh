#!/usr/bin/env bash
# Privatize every latent (.npy) in a folder, sharing one privacy ledger, resumably.
#
# Usage:
#   scripts/privatize_dir.sh INPUT_DIR OUTDIR EPSILON [NUM_PROCS] [-- extra `latentpriv privatize` options]
#
#   EPSILON    privacy budget per face for this release (e.g. 1.0).
#   NUM_PROCS  processes (default 1: privatizing is cheap; more run torchrun on this node). All of them
#              charge the same ledger (rank 0 opens it and serves the others), so no face can be
#              released past --max-epsilon however the files are split.
#
# Examples:
#   scripts/privatize_dir.sh latents/ private/ 1.0 -- --attr smile --max-epsilon 4
#   scripts/privatize_dir.sh latents/ private/ 2.0 4 -- --attr age --mechanism gaussian --delta 1e-5 \
#       --ledger /var/lib/me/ledger.sqlite
#
# Outputs: OUTDIR/STEM_private.npy and STEM_private.json (the release record) per input, plus
# OUTDIR/results.jsonl and summary.json. Rerunning the same command skips (and does not spend budget
# on) files already released; --overwrite releases them again and spends again. Logs go to
# OUTDIR/logs/privatize-<time>.log. Exit status: 0 all released, 1 some failed (e.g. refused by the
# ledger), 143 stopped by SIGTERM.
#
# Environment: PYTHON (default python3), NNODES/NODE_RANK/MASTER_ADDR/MASTER_PORT (several nodes: only
# rank 0 opens the ledger, on its local disk; the other ranks reach it over the process group).
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=launch_common.sh
source "$(dirname "${BASH_SOURCE[0]}")/launch_common.sh"

case "${1:-}" in -h|--help) usage 0 ;; esac
[[ $# -ge 3 ]] || usage
input_dir=$1
outdir=$2
epsilon=$3
shift 3
lp_split_count "$@"
num_procs=${LP_COUNT:-1}
set -- ${LP_REST[@]+"${LP_REST[@]}"}

[[ -d $input_dir ]] || lp_die "$input_dir is not a folder"
lp_check_count NUM_PROCS "$num_procs"
lp_launcher "$num_procs"

log="$outdir/logs/privatize-$(date +%Y%m%d-%H%M%S)-node${NODE_RANK:-0}.log"
lp_run "$log" "${LP_LAUNCHER[@]}" latentpriv privatize "$input_dir" -o "$outdir" --epsilon "$epsilon" "$@"
