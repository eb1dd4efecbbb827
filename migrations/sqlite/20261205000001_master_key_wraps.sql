-- Master keys wrapped by seals (a KMS or an HSM): the root of trust outside
-- the database. `seal` is the seal's id (its kind and location, no secret);
-- `wrapped` is what the seal returned, opened only by that seal.
CREATE TABLE master_key_wraps (
    master_key_id TEXT NOT NULL,
    seal          TEXT NOT NULL,
    wrapped       BLOB NOT NULL,
    created_at    INTEGER NOT NULL,
    PRIMARY KEY (master_key_id, seal)
);

-- Which wrapped master key seals new writes when no key file is configured.
CREATE TABLE sealed_keyring (
    id         INTEGER PRIMARY KEY CHECK (id = 1),
    current    TEXT NOT NULL,
    changed_at INTEGER NOT NULL
);
