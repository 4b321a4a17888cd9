-- Postings are keyed by where they come from in the outcome stream: (sequence, position),
-- both integers that only grow, so each insert goes to the right-hand end of the key's
-- B-tree. The key it replaces, (transfer_id, kind, side), was a numeric and two texts in
-- random order (with random transfer ids): about as much of PostgreSQL's time per settled
-- transfer as the rest of the COPY (perf-reports/2026-12-03-sinks-3.md, variants B and C).
-- It stays a key, so a duplicated posting is still refused.
--
-- Position within an entry: the i-th committed transfer's debit posting is 2i, its credit
-- posting 2i + 1; the j-th expiry of the entry follows them (2(T + j) and 2(T + j) + 1,
-- T the entry's transfers). Rows settled before this migration are numbered the same way
-- within their sequence, by transfer id, kind and side.
ALTER TABLE {schema}.postings ADD COLUMN position integer;
UPDATE {schema}.postings p SET position = numbered.position
FROM (
    SELECT ctid AS row_id,
           (row_number() OVER (PARTITION BY sequence ORDER BY transfer_id, kind, side) - 1)::integer AS position
    FROM {schema}.postings
) AS numbered
WHERE p.ctid = numbered.row_id;
ALTER TABLE {schema}.postings ALTER COLUMN position SET NOT NULL;
ALTER TABLE {schema}.postings DROP CONSTRAINT postings_pkey;
ALTER TABLE {schema}.postings ADD CONSTRAINT postings_pkey PRIMARY KEY (sequence, position);
