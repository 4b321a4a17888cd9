-- Balances rows are updated in place: each batch upserts every account it touched (about
-- 10 000 rows per batch in the bench). In full pages each update is a new row version on
-- another page and a new entry in the primary key; with room left on the page it is a
-- heap-only (HOT) update, the index untouched and the old version pruned by a later
-- batch. Fill factor 40 leaves room for a page's rows to be updated once more than a
-- batch before pruning; the upsert of 10 000 rows took about 40 % less time
-- (perf-reports/2026-12-04-settlement.md). The table holds one row per account, so the
-- space is small. CLUSTER rewrites the existing rows at that fill factor (in the
-- migration's transaction; the table is locked while it runs, one row per account).
ALTER TABLE {schema}.balances SET (fillfactor = 40);
CLUSTER {schema}.balances USING balances_pkey;
ALTER TABLE {schema}.balances SET WITHOUT CLUSTER;
