-- Requests per tenant per rate-limit window, summed over every gateway replica (SyncUsage).
-- `window_kind` is 'm' (start = unix minute) or 'd' (start = unix day, UTC). Old windows are
-- pruned by SyncUsage itself. No foreign key: counts are ephemeral, and a batch must not fail
-- as a whole on one tenant id.
CREATE TABLE usage_windows (
    tenant_id   uuid   NOT NULL,
    window_kind text   NOT NULL CHECK (window_kind IN ('m', 'd')),
    start       bigint NOT NULL,
    count       bigint NOT NULL CHECK (count >= 0),
    PRIMARY KEY (tenant_id, window_kind, start)
);
CREATE INDEX usage_windows_by_start ON usage_windows (window_kind, start);

ALTER TABLE usage_windows ENABLE ROW LEVEL SECURITY;
ALTER TABLE usage_windows FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON usage_windows
    USING (tenant_visible(tenant_id)) WITH CHECK (tenant_visible(tenant_id));
