#!/bin/bash
# Interleaved A/B: node throughput and sink catch-up with sinks at nice 0 and 19.
B=/tmp/pg-exp/tally-new; O=/tmp/pg-exp/ab; mkdir -p $O
for spec in none:19 postgres:0 postgres:19 events:0 events:19 all:0 all:19 none:19; do
  s=${spec%:*}; n=${spec#*:}; d=$O/$s-nice$n-$(date +%H%M%S)
  echo "== $s nice $n start: $(uptime)"
  nice $B bench --mode throughput --duration 3 --sinks $s --sink-nice $n --out $d > $d.log 2>&1
  echo "   end: $(uptime)"
done
