-- Envelope encryption (kit::envelope), in every service schema: each tenant's data key,
-- wrapped under the master key named by `master_key_id` (never stored here). Rotation
-- rewrites `wrapped` and `master_key_id`; what the data key sealed stays as it is.
CREATE TABLE data_keys (
    tenant_id     uuid        NOT NULL,
    version       integer     NOT NULL,
    master_key_id text        NOT NULL,
    wrapped       bytea       NOT NULL,
    created_at    timestamptz NOT NULL,
    rewrapped_at  timestamptz,
    PRIMARY KEY (tenant_id, version)
);

ALTER TABLE data_keys ENABLE ROW LEVEL SECURITY;
ALTER TABLE data_keys FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON data_keys
    USING (tenant_visible(tenant_id)) WITH CHECK (tenant_visible(tenant_id));
