#!/usr/bin/env bash
# Invert every image in a folder into latents, on one or several GPUs (torchrun), resumably.
#
# Usage:
#   scripts/invert_dir.sh INPUT_DIR OUTDIR [NUM_GPUS] [-- extra `latentpriv invert` options]
#
#   NUM_GPUS   processes on this node (default: the number of GPUs nvidia-smi lists; 1 without GPUs).
#              1 runs a plain process; more run `torchrun --nproc_per_node=NUM_GPUS`, one GPU each.
#
# Several nodes: start the same command on every node with NNODES, NODE_RANK, MASTER_ADDR and
# (optionally) MASTER_PORT set; OUTDIR must be on a filesystem that all nodes share.
#
# Examples:
#   scripts/invert_dir.sh faces/ latents/                    # all GPUs of this machine
#   scripts/invert_dir.sh faces/ latents/ 4 -- --batch-size 8 --iterations 500
#   NNODES=2 NODE_RANK=0 MASTER_ADDR=node0 scripts/invert_dir.sh /shared/faces /shared/latents 8
#
# Rerunning the same command resumes: finished images are verified and skipped. The log goes to the
# terminal and, when the run ends, to OUTDIR/logs/invert-<time>-node<N>.log (a run that fails at once
# creates nothing). The exit status is latentpriv's: 0 when
# every image was inverted, 1 when some failed (see OUTDIR/results.jsonl), 143 when stopped by SIGTERM.
#
# Environment: PYTHON (default python3), NNODES/NODE_RANK/MASTER_ADDR/MASTER_PORT (several nodes),
# OMP_NUM_THREADS (default 4 per process).
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=launch_common.sh
source "$(dirname "${BASH_SOURCE[0]}")/launch_common.sh"

case "${1:-}" in -h|--help) usage 0 ;; esac
[[ $# -ge 2 ]] || usage
input_dir=$1
outdir=$2
shift 2
lp_split_count "$@"
num_gpus=$LP_COUNT
set -- ${LP_REST[@]+"${LP_REST[@]}"}

[[ -d $input_dir ]] || lp_die "$input_dir is not a folder"
num_gpus=${num_gpus:-$(lp_count_gpus)}
lp_check_count NUM_GPUS "$num_gpus"
lp_launcher "$num_gpus"

log="$outdir/logs/invert-$(date +%Y%m%d-%H%M%S)-node${NODE_RANK:-0}.log"
lp_run "$log" "${LP_LAUNCHER[@]}" latentpriv invert "$input_dir" -o "$outdir" "$@"
