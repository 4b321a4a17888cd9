-- The outcome entry at the watermark, named by its sequence and checksum (CRC32C of its
-- header and body, as the node's stream holds it), so that a node resuming the sink over
-- another history (a failover that discarded records, a forced promotion, a journal
-- truncation) stops instead of skipping its records. The checksum counts only while
-- entry_sequence equals the watermark's sequence: a node of an earlier release moves the
-- sequence without them. NULL: written before this migration, or nothing yet.
ALTER TABLE {schema}.watermark ADD COLUMN entry_sequence bigint, ADD COLUMN entry_checksum bigint;
