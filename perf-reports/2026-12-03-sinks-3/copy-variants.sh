#!/bin/bash
P="psql -qtA postgres://root@127.0.0.1:5432/test"
one() { # label, extra sql, format
  $P -c "DROP SCHEMA IF EXISTS pgexp CASCADE; CREATE SCHEMA pgexp;" >/dev/null 2>&1
  $P -f schema.sql >/dev/null
  [ -n "$2" ] && $P -c "$2" >/dev/null
  if [ "$3" = bin ]; then o="WITH (FORMAT binary)"; e=bin; else o=""; e=txt; fi; pe=$e; [ "$3" = cd.txt ] && pe=_cd.txt && e=txt
  r=$($P <<SQL
\timing on
COPY pgexp.transfers FROM '/tmp/pg-exp/transfers.$e' $o;
COPY pgexp.postings FROM '/tmp/pg-exp/postings$( [ $pe = _cd.txt ] && echo _cd.txt || echo .$e)' $o;
SQL
)
  echo "$1 $(echo "$r" | grep -o 'Time: [0-9.]*' | awk '{printf "%s ", $2}')"
}
NOACC="DROP INDEX pgexp.postings_account"
NOPK="$NOACC; ALTER TABLE pgexp.postings DROP CONSTRAINT postings_pkey"
for i in 1 2 3; do
  one A-full "" txt
  one B-noacc "$NOACC" txt
  one C-noacc-nopk "$NOPK" txt
  one D-noacc-bin "$NOACC" bin
  one E-noacc-nopk-bin "$NOPK" bin
done
