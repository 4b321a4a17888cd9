#!/bin/sh
# Alternated base/new pairs of the apply-rate bench (see ../2026-12-05-cow-writes.md).
# BASE and NEW: the two apply-rate binaries.
set -e
for round in 1 2 3; do
  for workload in "--accounts 10000 --ids increasing" "--accounts 10000 --ids random" \
                  "--accounts 1000000 --distribution zipf --ids increasing"; do
    for binary in base new; do
      if [ "$binary" = base ]; then bin=$BASE; else bin=$NEW; fi
      line=$($bin $workload --transfers 5000000 2>&1 | tail -1)
      echo "round=$round binary=$binary $line load=$(cut -d' ' -f1 /proc/loadavg)"
    done
  done
done
