#!/bin/bash
# usage: longrun.sh LABEL TALLY_BIN TRANSFERS PORT [extra serve args...]
# tally serve on a fresh data dir (checkpoints at the default interval unless args say
# otherwise), driven by `tally bench --addr` (10 000 accounts, 8 189 per request, 4 in
# flight, local durability); RSS sampled every 2 s against the applied sequence. Then:
# kill -9 and restart (checkpoint + journal tail), SIGTERM and restart (clean).
# BENCH_ARGS (environment) is added to the bench command, e.g. "--accounts 1000000".
set -u
label=$1; bin=$2; n=$3; port=$4; shift 4
extra=("$@")
out=/tmp/ckpt/$label; data=/var/tmp/ckpt-$label
rm -rf "$out" "$data"; mkdir -p "$out"
uptime > "$out/uptime-start"
"$bin" serve --data "$data" --listen 127.0.0.1:$port "${extra[@]}" 2> "$out/serve.log" &
spid=$!
sleep 1
(
  t0=$(date +%s)
  echo "t_s applied_seq rss_kib anon_kib file_kib hwm_kib data_kib avail_kib load1" > "$out/samples.txt"
  while kill -0 $spid 2>/dev/null; do
    now=$(( $(date +%s) - t0 ))
    seq=$("$bin" status --addr 127.0.0.1:$port --json 2>/dev/null | sed -n 's/.*"applied_sequence":\([0-9]*\).*/\1/p')
    read rss anon file hwm < <(awk '/^VmRSS/{r=$2}/^RssAnon/{a=$2}/^RssFile/{f=$2}/^VmHWM/{h=$2}END{print r,a,f,h}' /proc/$spid/status 2>/dev/null)
    dk=$(du -sk "$data" 2>/dev/null | cut -f1)
    av=$(df -k --output=avail /var/tmp | tail -1)
    echo "$now ${seq:-?} $rss $anon $file $hwm ${dk:-0} $av $(cut -d' ' -f1 /proc/loadavg)" >> "$out/samples.txt"
    if [ $now -gt ${CAP_S:-100000} ] && [ ! -e "$out/capped" ]; then echo "time cap at t=$now seq=${seq:-?}" >> "$out/notes.txt"; touch "$out/capped"; kill "$(cat "$out/bench.pid")"; fi
    if [ "${av:-0}" -lt 12000000 ]; then echo "disk low at t=$now" >> "$out/notes.txt"; kill "$(cat "$out/bench.pid")"; fi
    sleep 2
  done
) &
samp=$!
"$bin" bench --addr 127.0.0.1:$port --transfers "$n" --durability local ${BENCH_ARGS:-} --out "$out/bench" > "$out/bench.txt" 2> "$out/bench.err" &
echo $! > "$out/bench.pid"
wait $!
sleep 3
{ echo "== after load"; grep -E '^(VmRSS|VmHWM|RssAnon|RssFile|Threads)' /proc/$spid/status; } >> "$out/notes.txt"
du -sh "$data"/* > "$out/du-after-load.txt" 2>/dev/null
ls -la "$data"/snapshots >> "$out/du-after-load.txt" 2>/dev/null
kill $samp 2>/dev/null
uptime > "$out/uptime-end-load"
# restart after a crash: the newest checkpoint + the journal tail after it
kill -9 $spid; wait $spid 2>/dev/null
restart() {
  local tag=$1
  local t0=$(date +%s.%N)
  "$bin" serve --data "$data" --listen 127.0.0.1:$port "${extra[@]}" 2> "$out/serve-$tag.log" &
  spid=$!
  until "$bin" status --addr 127.0.0.1:$port --json > "$out/status-$tag.json" 2>/dev/null; do sleep 0.05; done
  local t1=$(date +%s.%N)
  echo "$tag restart: $(echo "$t1 - $t0" | bc) s until status answers; load $(cut -d' ' -f1-3 /proc/loadavg)" >> "$out/notes.txt"
  grep -E '^(VmRSS|VmHWM)' /proc/$spid/status | sed "s/^/$tag /" >> "$out/notes.txt"
}
restart after-kill9
sleep 2
t0=$(date +%s.%N); kill $spid; wait $spid 2>/dev/null; t1=$(date +%s.%N)
echo "clean stop took $(echo "$t1 - $t0" | bc) s" >> "$out/notes.txt"
restart after-clean-stop
kill $spid; wait $spid 2>/dev/null
uptime > "$out/uptime-end"
du -sh "$data"/* > "$out/du.txt" 2>/dev/null
[ -n "${KEEP:-}" ] || rm -rf "$data"
echo done
