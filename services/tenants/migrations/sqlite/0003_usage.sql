-- Requests per tenant per rate-limit window, summed over every gateway replica (SyncUsage).
-- `window_kind` is 'm' (start = unix minute) or 'd' (start = unix day, UTC). Old windows are
-- pruned by SyncUsage itself. No foreign key: counts are ephemeral, and a batch must not fail
-- as a whole on one tenant id.
CREATE TABLE usage_windows (
    tenant_id   BLOB    NOT NULL,
    window_kind TEXT    NOT NULL CHECK (window_kind IN ('m', 'd')),
    start       INTEGER NOT NULL,
    count       INTEGER NOT NULL CHECK (count >= 0),
    PRIMARY KEY (tenant_id, window_kind, start)
) STRICT;
CREATE INDEX usage_windows_by_start ON usage_windows (window_kind, start);
