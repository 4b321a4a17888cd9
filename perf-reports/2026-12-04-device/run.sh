#!/bin/bash
# Issue 13 on a machine with a core per stage: open-loop single-transfer latency with the
# node's threads pinned one stage per core (busy-spin), against parking, and one batch
# throughput run. Runs from the repository root on the device machine, with release
# binaries of `tally` and `tally-load` in target/release (built on the 2-core machine).
# Writes its results under $OUT.
set -u
OUT=${OUT:-/tmp/device-out}
mkdir -p "$OUT"
B=target/release
{ date -u; uname -a; nproc; grep -m1 "model name" /proc/cpuinfo; grep -E "MemTotal" /proc/meminfo; df -h /tmp | tail -1; } > "$OUT/machine.txt" 2>&1
# Pins every thread of every running `tally` process by its name, once, as it appears:
# each pipeline stage on a core of its own (2-8), the connection threads on 9-11, the
# rest on 0-1. The harness (and so the node until it is pinned) runs on 12-15.
python3 - > "$OUT/pins.txt" 2>&1 <<'PY' &
import os, time
cores = {"business-logic": {2}, "journal": {3}, "cold-lookup": {4}, "sequencer": {5},
         "reply": {6}, "outcome-log": {7}, "history": {8}}
done = set()
while True:
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            if open(f"/proc/{pid}/comm").read().strip() != "tally":
                continue
            for tid in os.listdir(f"/proc/{pid}/task"):
                if (pid, tid) in done:
                    continue
                name = open(f"/proc/{pid}/task/{tid}/comm").read().strip()
                mask = cores.get(name) or ({9, 10, 11} if name.startswith(("conn", "writer")) else {0, 1})
                os.sched_setaffinity(int(tid), mask)
                print(pid, tid, name, sorted(os.sched_getaffinity(int(tid))), flush=True)
                done.add((pid, tid))
        except OSError:
            pass
    time.sleep(0.05)
PY
watcher=$!
run() {
  local name=$1; shift
  python3 -c 'import os, sys; os.sched_setaffinity(0, {12, 13, 14, 15}); os.execv(sys.argv[1], sys.argv[1:])' "$B/tally-load" --tally-bin "$B/tally" --other-load-max 200 --attempts 1 \
    --work-dir "/tmp/tl-$name" "$@" > "$OUT/$name.md" 2> "$OUT/$name.err"
  echo "$name rc=$?" >> "$OUT/machine.txt"
}
mkdir -p /tmp/tl-busy /tmp/tl-park /tmp/tl-tcp
run busy --phases open-loop --durability none,local --rates 20000,100000 --rate-seconds 5 --wait busy-spin
run park --phases open-loop --durability none,local --rates 20000,100000 --rate-seconds 5 --wait parking
run tcp --phases tcp --durability local --wait busy-spin
kill $watcher
date -u >> "$OUT/machine.txt"
