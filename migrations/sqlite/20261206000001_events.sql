-- Change events (the outbox): written in the transaction of the change they
-- describe. Ids come from keyward_state.event_seq, taken under the state
-- row's lock, so they increase in commit order: a reader that has seen id N
-- has seen every event before it. No secret is ever stored here.
ALTER TABLE keyward_state ADD COLUMN event_seq INTEGER NOT NULL DEFAULT 0;
-- Every event up to this id was pruned by retention.
ALTER TABLE keyward_state ADD COLUMN events_pruned_through INTEGER NOT NULL DEFAULT 0;
-- The last event whose webhook deliveries were queued.
ALTER TABLE keyward_state ADD COLUMN webhook_cursor INTEGER NOT NULL DEFAULT 0;

CREATE TABLE events (
    id      INTEGER PRIMARY KEY,
    at      INTEGER NOT NULL,
    kind    TEXT NOT NULL,
    keyset  TEXT,
    kid     TEXT,
    client  TEXT,
    token   TEXT,
    detail  TEXT,
    -- Near-expiry alerts and overdue rotations are stored once per value.
    once_key TEXT UNIQUE
);
CREATE INDEX events_at ON events (at);

-- Webhooks: where events are POSTed. Their signing secrets are sealed in
-- keyward_meta (webhook/<name>), so a master-key rewrap reaches them.
CREATE TABLE webhooks (
    name        TEXT PRIMARY KEY,
    url         TEXT NOT NULL,
    -- JSON arrays of patterns.
    kinds       TEXT NOT NULL,
    keysets     TEXT NOT NULL,
    clients     TEXT NOT NULL,
    -- Events up to this id predate the webhook.
    after_event INTEGER NOT NULL,
    created_at  INTEGER NOT NULL
);

CREATE TABLE webhook_deliveries (
    webhook         TEXT NOT NULL,
    event_id        INTEGER NOT NULL,
    -- pending, delivered or failed (gave up).
    state           TEXT NOT NULL,
    attempts        INTEGER NOT NULL DEFAULT 0,
    next_attempt_at INTEGER NOT NULL,
    -- The replica delivering it, until when.
    claimed_by      TEXT,
    claimed_until   INTEGER,
    last_attempt_at INTEGER,
    last_status     INTEGER,
    last_error      TEXT,
    delivered_at    INTEGER,
    PRIMARY KEY (webhook, event_id)
);
CREATE INDEX webhook_deliveries_due ON webhook_deliveries (state, next_attempt_at);
