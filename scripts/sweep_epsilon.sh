#!/usr/bin/env bash
# Privatize a folder of latents at several epsilons: one output folder per epsilon.
#
# Usage:
#   scripts/sweep_epsilon.sh INPUT_DIR OUTROOT "EPS1 EPS2 ..." [NUM_PROCS] [-- extra `latentpriv privatize` options]
#
# Runs scripts/privatize_dir.sh INPUT_DIR OUTROOT/eps_<EPS> <EPS> for each epsilon in turn (stopping at
# the first that fails), so each epsilon's folder has its own results.jsonl, summary.json and logs.
# A sweep log is written to OUTROOT/logs/sweep-<time>.log.
#
# Privacy accounting: every epsilon is a release of every face, so one face's total spend is the SUM
# of the sweep's epsilons (the ledger composes them and --max-epsilon applies to that sum). For a
# utility study that will never be published, pass --seed N (reproducible, marked not-for-release)
# and a separate --ledger for the experiment.
#
# Example:
#   scripts/sweep_epsilon.sh latents/ sweep/ "0.5 1 2 4 8" -- --attr smile --seed 0 --ledger sweep/ledger.jsonl
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=launch_common.sh
source "$(dirname "${BASH_SOURCE[0]}")/launch_common.sh"

case "${1:-}" in -h|--help) usage 0 ;; esac
[[ $# -ge 3 ]] || usage
input_dir=$1
outroot=$2
read -r -a epsilons <<< "$3"
shift 3
lp_split_count "$@"
num_procs=${LP_COUNT:-1}
set -- ${LP_REST[@]+"${LP_REST[@]}"}

[[ -d $input_dir ]] || lp_die "$input_dir is not a folder"
[[ ${#epsilons[@]} -ge 1 ]] || lp_die "give at least one epsilon, e.g. \"0.5 1 2\""
lp_check_count NUM_PROCS "$num_procs"
for eps in "${epsilons[@]}"; do
    [[ $eps =~ ^[0-9]*\.?[0-9]+([eE][-+]?[0-9]+)?$ ]] || lp_die "epsilon '$eps' is not a positive number"
done

sweep_log="$outroot/logs/sweep-$(date +%Y%m%d-%H%M%S).log"
here=$(dirname "${BASH_SOURCE[0]}")
for eps in "${epsilons[@]}"; do
    echo "# $(date -Is) epsilon $eps -> $outroot/eps_$eps" | tee -a "$sweep_log" >&2
    status=0
    lp_run "$sweep_log" "$here/privatize_dir.sh" "$input_dir" "$outroot/eps_$eps" "$eps" "$num_procs" -- "$@" \
        || status=$?
    if [[ $status -ne 0 ]]; then
        echo "sweep_epsilon.sh: stopped at epsilon $eps (status $status); see $outroot/eps_$eps/results.jsonl" >&2
        exit "$status"
    fi
done
echo "# $(date -Is) sweep done: ${epsilons[*]}" | tee -a "$sweep_log" >&2
