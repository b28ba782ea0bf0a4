-- Envelope encryption (kit::envelope): each tenant's data key, wrapped under the master key
-- named by `master_key_id` (never stored here). Rotation rewrites `wrapped` and
-- `master_key_id`; what the data key sealed stays as it is.
CREATE TABLE data_keys (
    tenant_id     BLOB    NOT NULL,
    version       INTEGER NOT NULL,
    master_key_id TEXT    NOT NULL,
    wrapped       BLOB    NOT NULL,
    created_at    TEXT    NOT NULL,
    rewrapped_at  TEXT,
    PRIMARY KEY (tenant_id, version)
) WITHOUT ROWID;
