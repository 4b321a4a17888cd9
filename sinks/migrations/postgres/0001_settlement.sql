-- Settlement tables. `{schema}` is replaced by the sink's schema name (default `tally`).
-- Numbers are `numeric`: ids and amounts are unsigned 128-bit, timestamps unsigned 64-bit.

CREATE TABLE {schema}.transfers (
    id numeric(39, 0) PRIMARY KEY,
    debit_account_id numeric(39, 0) NOT NULL,
    credit_account_id numeric(39, 0) NOT NULL,
    amount numeric(39, 0) NOT NULL,
    pending_id numeric(39, 0) NOT NULL,
    user_data_128 numeric(39, 0) NOT NULL,
    user_data_64 numeric(20, 0) NOT NULL,
    user_data_32 bigint NOT NULL,
    timeout bigint NOT NULL,
    ledger bigint NOT NULL,
    code integer NOT NULL,
    -- The flag bits as the record holds them (the JSON form lists their names).
    flags integer NOT NULL,
    timestamp numeric(20, 0) NOT NULL,
    -- The journal sequence of the request that committed it.
    sequence bigint NOT NULL
);

-- One row per account side of each committed transfer, and of each expiry of a pending
-- transfer. Per account and ledger, the sums of the deltas are its balances.
CREATE TABLE {schema}.postings (
    transfer_id numeric(39, 0) NOT NULL,
    -- 'transfer' (the transfer's own effect) or 'expiry' (a tick expired the pending).
    kind text NOT NULL CHECK (kind IN ('transfer', 'expiry')),
    side text NOT NULL CHECK (side IN ('debit', 'credit')),
    account_id numeric(39, 0) NOT NULL,
    ledger bigint NOT NULL,
    -- The pending transfer this posting releases (a post, a void, an expiry); 0 if none.
    resolves numeric(39, 0) NOT NULL,
    pending_delta numeric(40, 0),
    posted_delta numeric(40, 0) NOT NULL,
    sequence bigint NOT NULL,
    PRIMARY KEY (transfer_id, kind, side)
);
CREATE INDEX postings_account ON {schema}.postings (account_id);
CREATE INDEX postings_unresolved ON {schema}.postings (resolves) WHERE pending_delta IS NULL;

CREATE TABLE {schema}.balances (
    id numeric(39, 0) PRIMARY KEY,
    debits_pending numeric(39, 0) NOT NULL,
    debits_posted numeric(39, 0) NOT NULL,
    credits_pending numeric(39, 0) NOT NULL,
    credits_posted numeric(39, 0) NOT NULL,
    -- The journal sequence after which the row holds these values.
    sequence bigint NOT NULL
);

-- The last outcome-stream sequence each sink writing here has committed.
CREATE TABLE {schema}.watermark (
    sink text PRIMARY KEY,
    sequence bigint NOT NULL
);
INSERT INTO {schema}.watermark (sink, sequence) VALUES ('settlement', 0);
