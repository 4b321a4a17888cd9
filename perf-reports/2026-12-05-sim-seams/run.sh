#!/bin/bash
# A/B of the production path: base (6439bb9, start of session) vs head, alternated.
cd /tmp/ab
for round in 1 2 3 4 5; do
  if [ $((round % 2)) -eq 1 ]; then order="base head2"; else order="head2 base"; fi
  for b in $order; do
    /tmp/tally-$b bench --transfers 2000000 --json --out /tmp/ab/tp-$b-$round 2>/dev/null \
      | python3 -c "import json,sys; d=json.load(sys.stdin); r=d['runs'][0]; print('throughput', '$b', $round, round(r['transfers_per_second']), r['latency_ms']['p99'], d['machine']['load_average_at_start'])"
  done
done
for round in 1 2 3; do
  if [ $((round % 2)) -eq 1 ]; then order="base head2"; else order="head2 base"; fi
  for b in $order; do
    /tmp/tally-$b bench --mode latency --rate 5000 --duration 5 --durability none --json --out /tmp/ab/lat-$b-$round 2>/dev/null \
      | python3 -c "import json,sys; d=json.load(sys.stdin); r=d['runs'][0]; print('latency5k-none', '$b', $round, r['latency_ms']['p50'], r['latency_ms']['p99'], r['latency_ms']['p99_9'], d['machine']['load_average_at_start'])"
  done
done
