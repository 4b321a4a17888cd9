#!/bin/bash
# Prepared on 2026-12-04 and not yet run: the device machine was not lent again that session.
# Issue 7 on a machine with cores to spare: batch throughput of a primary alone (`local`)
# and with one standby process (`replicated:1`, `local+replicated:1`), and a standby's
# catch-up, with every process free to use any of the 16 cores (no pinning, parking
# waits). Runs from the repository root on the device machine, with release binaries of
# `tally` and `tally-load` in target/release. Writes its results under $OUT.
set -u
OUT=${OUT:-/tmp/device-out}
mkdir -p "$OUT"
B=target/release
{ date -u; uname -r; nproc; grep -m1 "model name" /proc/cpuinfo; } > "$OUT/machine.txt" 2>&1
run() {
  local name=$1; shift
  mkdir -p "/tmp/tl-$name"
  "$B/tally-load" --tally-bin "$B/tally" --other-load-max 200 --attempts 1 --work-dir "/tmp/tl-$name" "$@" \
    > "$OUT/$name.md" 2> "$OUT/$name.err"
  echo "$name rc=$? $(date -u +%T)" >> "$OUT/machine.txt"
}
run local0 --phases tcp --durability local --repeat 3
run standby1 --phases tcp --durability local,replicated:1,local+replicated:1 --standbys 1 --repeat 3
run catchup --phases catch-up --durability local
