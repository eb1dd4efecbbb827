-- The audit log: one row per keyward.v1 call and /oauth2/token request.
-- `hash` is HMAC-SHA-256, under a key sealed in keyward_meta ('audit_key'),
-- of the previous event's hash and this event's fields; ids are consecutive.
CREATE TABLE audit_events (
    id         INTEGER PRIMARY KEY NOT NULL,
    at         INTEGER NOT NULL,
    principal  TEXT NOT NULL,
    action     TEXT NOT NULL,
    target     TEXT NOT NULL,
    outcome    TEXT NOT NULL,
    peer       TEXT NOT NULL,
    request_id TEXT NOT NULL,
    hash       BLOB NOT NULL
);
CREATE INDEX audit_events_at ON audit_events (at);

-- One row: where the chain ends (head) and where its kept part starts
-- (first_id, chained from first_prev) once retention has pruned older events.
-- Appends lock this row, which serialises replicas writing at once.
CREATE TABLE audit_chain (
    id         INTEGER PRIMARY KEY CHECK (id = 1),
    head_id    INTEGER NOT NULL,
    head_hash  BLOB NOT NULL,
    first_id   INTEGER NOT NULL,
    first_prev BLOB NOT NULL
);
INSERT INTO audit_chain (id, head_id, head_hash, first_id, first_prev)
VALUES (1, 0, zeroblob(32), 1, zeroblob(32));
