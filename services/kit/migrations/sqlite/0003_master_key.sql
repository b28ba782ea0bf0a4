-- A fingerprint (an HMAC under the key, never the key) of the master secret this database was
-- first started with, so a process holding another key refuses to start instead of minting
-- API keys and contexts no other process accepts.
CREATE TABLE master_key (
    id          INTEGER PRIMARY KEY CHECK (id = 1),
    fingerprint TEXT    NOT NULL,
    recorded_at TEXT    NOT NULL
);
