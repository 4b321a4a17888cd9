#!/bin/bash
# Checkpoint write+verify time, base vs head, alternated: a node with a checkpoint every 1 M events,
# 6 M transfers through tally bench --addr.
cd /tmp/ab
port=7931
for round in 1 2; do
  if [ $round -eq 1 ]; then order="base head2"; else order="head2 base"; fi
  for b in $order; do
    port=$((port+1))
    rm -rf /var/tmp/ckpt-$b && mkdir -p /var/tmp/ckpt-$b
    /tmp/tally-$b serve --data /var/tmp/ckpt-$b --listen 127.0.0.1:$port --snapshot-after-events 1000000 --snapshot-interval-s 600 2> /tmp/ab/ckpt-$b-$round.log &
    pid=$!
    sleep 1
    /tmp/tally-$b bench --addr 127.0.0.1:$port --transfers 6000000 --json --out /tmp/ab/ckpt-bench-$b-$round 2>/dev/null >/dev/null
    sleep 2
    kill $pid; wait $pid 2>/dev/null
    echo "$b round $round:"; grep -o "written and verified in [0-9]* ms\|written_and_verified_ms=[0-9]*" /tmp/ab/ckpt-$b-$round.log | tr '\n' ' '; echo
  done
done
