-- The checksum of the outcome entry at the watermark (CRC32C of its header and body, as
-- the node's stream holds it), so that a node resuming the sink over another history (a
-- failover that discarded records, a forced promotion, a journal truncation) stops
-- instead of skipping its records. NULL: written before this migration, or nothing yet.
ALTER TABLE {schema}.watermark ADD COLUMN entry_checksum bigint;
