#!/bin/bash
# Catch-up of a settlement backlog with the node idle.
# usage: catchup.sh TALLY_BIN LABEL [DURATION]
set -u
BIN=$1; LABEL=$2; DUR=${3:-3}
PG=postgres://root@127.0.0.1:5432/test
S=pgexp_$LABEL
W=/tmp/pg-exp/run-$LABEL; rm -rf $W; mkdir -p $W
psql -q $PG -c "DROP SCHEMA IF EXISTS $S CASCADE" 2>/dev/null
# 1. a node whose database is unreachable builds a backlog
$BIN serve --data $W/node --listen 127.0.0.1:7411 --settlement postgres://root@127.0.0.1:1/test --settlement-schema $S >$W/node1.log 2>&1 &
P=$!
for i in $(seq 100); do grep -q "listening on" $W/node1.log && break; sleep 0.1; done
nice $BIN bench --addr 127.0.0.1:7411 --mode throughput --duration $DUR --out $W/bench >$W/bench.log 2>&1
kill -TERM $P; wait $P
# 2. restart with the database: time the catch-up
echo "load: $(uptime)"
$BIN serve --data $W/node --listen 127.0.0.1:7411 --settlement "$PG?application_name=tallysink" --settlement-schema $S ${EXTRA:-} >$W/node2.log 2>&1 &
P=$!
for i in $(seq 100); do grep -q "listening on" $W/node2.log && break; sleep 0.1; done
LAST=$($BIN status --addr 127.0.0.1:7411 | awk '/last_sequence/{print $2}')
t0=$(date +%s.%N)
if [ -n "${PERF:-}" ]; then
  sleep 1; BP=$(psql -qtA $PG -c "SELECT pid FROM pg_stat_activity WHERE application_name='tallysink'")
  perf record -F 999 -g -o $W/perf-backend.data -p $BP -- sleep ${PERF} >/dev/null 2>&1 &
fi
for k in $(seq 900); do
  wm=$(psql -qtA $PG -c "SELECT sequence FROM $S.watermark" 2>/dev/null)
  [ "${wm:-0}" -ge "$LAST" ] 2>/dev/null && break
  sleep 0.1
done
t1=$(date +%s.%N)
N=$(psql -qtA $PG -c "SELECT count(*) FROM $S.transfers")
SECS=$(echo "$t1-$t0"|bc)
echo "$LABEL: $N transfers, last sequence $LAST, caught up in $SECS s => $(echo "$N/$SECS"|bc) transfers/s; $(uptime)"
cpu() { awk '{print ($14+$15)/100}' $1; }
for t in /proc/$P/task/*; do [ "$(cat $t/comm)" = sink-settlement ] && echo "sink thread cpu s: $(cpu $t/stat)"; done
BP=$(psql -qtA $PG -c "SELECT pid FROM pg_stat_activity WHERE application_name='tallysink'")
echo "backend cpu s: $(cpu /proc/$BP/stat)"
grep -c "sink error" $W/node2.log
kill -TERM $P; wait $P
