#!/bin/bash
# usage: run.sh LABEL TALLY_BIN TRANSFERS PORT [extra serve args...]
# Starts `tally serve` on a fresh dir, drives it with `tally bench --addr`, samples every second.
set -u
label=$1; bin=$2; n=$3; port=$4; shift 4
out=/tmp/mem/$label; data=/var/tmp/mem-$label
rm -rf "$out" "$data"; mkdir -p "$out"
uptime > "$out/uptime-start"
env ${SERVE_ENV:-X=1} "$bin" serve --data "$data" --listen 127.0.0.1:$port "$@" 2> "$out/serve.log" &
spid=$!
echo $spid > "$out/pid"
sleep 1
(
  t0=$(date +%s)
  echo "t_s applied_seq rss_kib anon_kib file_kib shmem_kib hist_kib" > "$out/samples.txt"
  i=0
  while kill -0 $spid 2>/dev/null; do
    now=$(( $(date +%s) - t0 ))
    seq=$("$bin" status --addr 127.0.0.1:$port --json 2>/dev/null | sed -n 's/.*"applied_sequence":\([0-9]*\).*/\1/p')
    read rss anon file shm < <(awk '/^VmRSS/{r=$2}/^RssAnon/{a=$2}/^RssFile/{f=$2}/^RssShmem/{s=$2}END{print r,a,f,s}' /proc/$spid/status 2>/dev/null)
    hist=$(du -sk "$data/history" 2>/dev/null | cut -f1)
    echo "$now ${seq:-?} $rss $anon $file $shm ${hist:-0}" >> "$out/samples.txt"
    if [ $((i % 10)) -eq 0 ]; then
      { echo "== t=$now seq=${seq:-?}"; cat /proc/$spid/smaps_rollup 2>/dev/null | grep -E '^(Rss|Anonymous|Pss_Anon|Pss_File):';
        awk '/^[0-9a-f]+-[0-9a-f]+ /{m=$0} /^Rss:/{print $2, m}' /proc/$spid/smaps 2>/dev/null | sort -rn | head -8; } >> "$out/maps.txt"
    fi
    i=$((i+1)); sleep 1
  done
) &
samp=$!
/usr/bin/time -v "$bin" bench --addr 127.0.0.1:$port --transfers "$n" --durability local --out "$out/bench" > "$out/bench.txt" 2> "$out/bench.err"
sleep 3
# one last sample after the load
{ echo "== after load"; cat /proc/$spid/status | grep -E '^(VmRSS|VmHWM|RssAnon|RssFile|RssShmem|Threads)'; } >> "$out/maps.txt"
kill $spid; wait $spid 2>/dev/null
sleep 1; kill $samp 2>/dev/null
uptime > "$out/uptime-end"
du -sh "$data"/* > "$out/du.txt" 2>/dev/null
rm -rf "$data"
echo done
