#!/bin/bash
B=/tmp/pg-exp/tally-new; O=/tmp/pg-exp/ab3; mkdir -p $O
for spec in none:19 postgres:19 all:0 all:19 none:19 all:19 all:0 none:19; do
  s=${spec%:*}; n=${spec#*:}; d=$O/$s-nice$n-$(date +%H%M%S)
  echo "== $s nice $n start: $(uptime)"
  nice $B bench --mode throughput --duration 3 --sinks $s --sink-nice $n --out $d > $d.log 2>&1
done
