-- A fingerprint (an HMAC under the key, never the key) of the master secret this schema was
-- first started with, so a process holding another key refuses to start instead of minting
-- API keys and contexts no other process accepts.
CREATE TABLE master_key (
    id          smallint    PRIMARY KEY CHECK (id = 1),
    fingerprint text        NOT NULL,
    recorded_at timestamptz NOT NULL
);
