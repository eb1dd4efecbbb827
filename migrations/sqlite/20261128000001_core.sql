-- keyward core schema (SQLite). Times are Unix seconds. Never edit an applied migration.

-- Master-key canary and other singletons.
CREATE TABLE keyward_meta (
    name   TEXT PRIMARY KEY NOT NULL,
    key_id TEXT NOT NULL,
    value  BLOB NOT NULL
);

-- Bumped by every change to published keys; other processes poll it.
CREATE TABLE keyward_state (
    id         INTEGER PRIMARY KEY CHECK (id = 1),
    generation INTEGER NOT NULL
);
INSERT INTO keyward_state (id, generation) VALUES (1, 0);

-- Only hashes of tokens are stored.
CREATE TABLE admin_tokens (
    id         TEXT PRIMARY KEY NOT NULL,
    token_hash BLOB NOT NULL UNIQUE,
    role       TEXT NOT NULL,
    created_at INTEGER NOT NULL
);

CREATE TABLE keysets (
    id               INTEGER PRIMARY KEY AUTOINCREMENT,
    name             TEXT NOT NULL,
    algorithm        TEXT NOT NULL,
    rsa_bits         INTEGER,
    created_at       INTEGER NOT NULL,
    deleted_at       INTEGER,
    -- Rotation policy (seconds): a fixed period or a 5-field UTC cron schedule.
    rotate_every     INTEGER,
    schedule         TEXT,
    prepublish       INTEGER NOT NULL,
    retain           INTEGER NOT NULL,
    max_token_ttl    INTEGER NOT NULL,
    next_rotation_at INTEGER NOT NULL,
    -- Bumped by every change to the set's keys or policy: transitions are
    -- conditional on it, so racing rotations change the set exactly once.
    version          INTEGER NOT NULL DEFAULT 1,
    CHECK ((rotate_every IS NULL) <> (schedule IS NULL))
);
-- A name is unique among live key sets; deleted ones keep their rows (and kids).
CREATE UNIQUE INDEX keysets_live_name ON keysets (name) WHERE deleted_at IS NULL;

-- Rows are never deleted: the primary key keeps every kid taken forever.
CREATE TABLE keys (
    kid           TEXT PRIMARY KEY NOT NULL,
    keyset_id     INTEGER NOT NULL REFERENCES keysets (id),
    algorithm     TEXT NOT NULL,
    state         TEXT NOT NULL
        CHECK (state IN ('pending', 'active', 'retired', 'expired', 'revoked')),
    public_jwk    TEXT NOT NULL,
    -- AES-256-GCM sealed PKCS#8; NULL once the key can no longer sign.
    private_key   BLOB,
    master_key_id TEXT,
    created_at    INTEGER NOT NULL,
    -- Actual transition times; planned ones follow from the key set's next_rotation_at.
    activated_at  INTEGER,
    retired_at    INTEGER,
    expires_at    INTEGER,
    revoked_at    INTEGER,
    CHECK (state NOT IN ('active', 'pending') OR (private_key IS NOT NULL AND master_key_id IS NOT NULL))
);
-- The schema itself forbids two active keys in one key set.
CREATE UNIQUE INDEX keys_one_active ON keys (keyset_id) WHERE state = 'active';
CREATE INDEX keys_by_keyset ON keys (keyset_id, state);

CREATE TABLE clients (
    id             TEXT PRIMARY KEY NOT NULL,
    display_name   TEXT NOT NULL,
    discovery_uri  TEXT NOT NULL,
    callback_url   TEXT NOT NULL,
    scopes         TEXT NOT NULL,
    auth_method    TEXT NOT NULL,
    labels         TEXT NOT NULL,
    secret_version INTEGER NOT NULL,
    created_at     INTEGER NOT NULL,
    updated_at     INTEGER NOT NULL,
    -- OAuth 2.0 client-credentials tokens: the key set that signs them (by
    -- name), their lifetime in seconds, audience and the scopes allowed.
    token_keyset   TEXT,
    token_ttl      INTEGER NOT NULL DEFAULT 900,
    audience       TEXT NOT NULL DEFAULT '',
    allowed_scopes TEXT NOT NULL DEFAULT '[]'
);

CREATE TABLE client_secrets (
    client_id     TEXT NOT NULL REFERENCES clients (id),
    version       INTEGER NOT NULL,
    -- AES-256-GCM sealed secret, bound to (client_id, version).
    secret        BLOB NOT NULL,
    master_key_id TEXT NOT NULL,
    created_at    INTEGER NOT NULL,
    valid_until   INTEGER,
    PRIMARY KEY (client_id, version)
);
