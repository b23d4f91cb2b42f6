#!/bin/bash
# Two versions of the agent, alternately, on the many-files bench: the machine's noise (its neighbours'
# load moves one run by a fifth) hits both alike, and the medians compare what the code changed.
#
#   bench/ab_many_files.sh OUT ROUNDS TREE... [-- many_files_peer.py options]
#
# Each TREE is a checkout with its own logagent/ (e.g. `git worktree add /tmp/base <rev>`, its .venv a
# link to this one's, its compiled modules built or copied); each round runs
# `bench/many_files_peer.py --rounds 1 --shippers logagent` in every tree in turn (default --files
# 10000; the broker from LOGAGENT_TEST_KAFKA), and appends that run's table row to OUT, named by tree.
# Run nothing else meanwhile.
set -u
out=$1 rounds=$2
shift 2
trees=()
while [ $# -gt 0 ] && [ "$1" != "--" ]; do trees+=("$1"); shift; done
[ $# -gt 0 ] && shift
opts=("$@")
[ ${#opts[@]} -eq 0 ] && opts=(--files 10000)
: > "$out"
for i in $(seq 1 "$rounds"); do
  for tree in "${trees[@]}"; do
    (cd "$tree" && .venv/bin/python -m compileall -q logagent \
      && .venv/bin/python bench/many_files_peer.py --rounds 1 --shippers logagent "${opts[@]}" 2>&1) \
      | grep "^| [0-9]" | sed "s|^|$(basename "$tree") round $i |" >> "$out"
  done
done
