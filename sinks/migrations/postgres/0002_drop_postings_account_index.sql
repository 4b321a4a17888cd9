-- The postings account index goes. Nothing the sink or `tally reconcile` runs looks
-- postings up by account (reconcile sums them per account with one scan and GROUP BY),
-- and keeping the index up to date was about a third of PostgreSQL's time per settled
-- transfer: two random B-tree inserts per transfer on a numeric key
-- (perf-reports/2026-12-02-sinks-2.md, 2026-12-03-sinks-3.md). An operator who queries
-- postings by account can create an index of their own, at that cost.
DROP INDEX IF EXISTS {schema}.postings_account;
