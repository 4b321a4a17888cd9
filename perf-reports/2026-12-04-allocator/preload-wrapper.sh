#!/bin/bash
if [ "$1" = serve ]; then LD_PRELOAD=/usr/lib/x86_64-linux-gnu/libjemalloc.so.2 exec /tmp/tally-new "$@"; else exec /tmp/tally-new "$@"; fi
