#!/bin/bash
if [ "$1" = serve ]; then _RJEM_MALLOC_CONF=background_thread:true,dirty_decay_ms:1000,muzzy_decay_ms:0 exec /tmp/bins/tally-jemalloc "$@"; else exec /tmp/bins/tally-jemalloc "$@"; fi
