"""The PostgreSQL room store's schema, versioned.

The same tables as the SQLite store (``server/storage/schema.py``: rooms, history, latents,
uploads, members, runs, undo stacks, life cycle, deleted ids) with PostgreSQL types, so that the
row conversions of ``server/storage/schema.py`` serve both, plus ``room_fence``: the room's
ownership epoch. A node that takes a room's lease in Redis increments the epoch and commits only
while the stored epoch is still its own (``PgStore.save_room``), so two nodes never both commit a
room, even when Redis forgot a lease (a restart) and two nodes believed they held it.

``MIGRATIONS[n]`` brings a database at version ``n`` to ``n + 1``; ``meta.schema`` is the version.
"""

from __future__ import annotations

SCHEMA_V1 = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS rooms (
    id TEXT PRIMARY KEY,
    edit_hash TEXT NOT NULL,            -- sha256 hex of the edit capability (never the token)
    view_hash TEXT NOT NULL,
    created DOUBLE PRECISION NOT NULL,
    updated DOUBLE PRECISION NOT NULL,
    version BIGINT NOT NULL,
    drag BIGINT NOT NULL,
    next_member BIGINT NOT NULL,
    image TEXT NOT NULL,                -- JSON, protocol wire form
    pairs TEXT NOT NULL,                -- JSON list
    params TEXT NOT NULL,               -- JSON
    mask BYTEA NOT NULL,                -- grid cells
    history_index INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS history (
    room_id TEXT NOT NULL REFERENCES rooms(id) ON DELETE CASCADE,
    pos INTEGER NOT NULL,
    kind TEXT NOT NULL,
    by_member TEXT,
    image TEXT NOT NULL,
    latent TEXT,                        -- = image.latent, for garbage collection
    before_pairs TEXT NOT NULL,
    before_mask BYTEA,
    after_pairs TEXT NOT NULL,
    after_mask BYTEA,
    PRIMARY KEY (room_id, pos)
);
CREATE INDEX IF NOT EXISTS history_latent ON history (latent) WHERE latent IS NOT NULL;
CREATE TABLE IF NOT EXISTS latents (
    key TEXT PRIMARY KEY, data BYTEA NOT NULL, created DOUBLE PRECISION NOT NULL
);
CREATE TABLE IF NOT EXISTS uploads (
    key TEXT PRIMARY KEY,
    data BYTEA NOT NULL,                -- the preprocessed target, PNG at the model's resolution
    w INTEGER NOT NULL,
    h INTEGER NOT NULL,
    created DOUBLE PRECISION NOT NULL
);
CREATE TABLE IF NOT EXISTS room_uploads (
    room_id TEXT PRIMARY KEY REFERENCES rooms(id) ON DELETE CASCADE,
    key TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS room_origins (
    room_id TEXT PRIMARY KEY REFERENCES rooms(id) ON DELETE CASCADE,
    image TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS room_members (
    room_id TEXT NOT NULL REFERENCES rooms(id) ON DELETE CASCADE,
    id TEXT NOT NULL,
    secret_hash TEXT NOT NULL,          -- sha256 hex of "<room id>:<browser secret>"
    name TEXT NOT NULL,
    colour TEXT NOT NULL,
    seen DOUBLE PRECISION NOT NULL,
    PRIMARY KEY (room_id, id)
);
CREATE TABLE IF NOT EXISTS room_runs (
    room_id TEXT PRIMARY KEY REFERENCES rooms(id) ON DELETE CASCADE,
    kind TEXT NOT NULL,
    drag BIGINT NOT NULL,
    by_member TEXT,
    started DOUBLE PRECISION NOT NULL,
    step INTEGER NOT NULL,
    latent TEXT,
    before_pairs TEXT NOT NULL,
    before_mask BYTEA,
    pairs TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS history_ids (
    room_id TEXT PRIMARY KEY REFERENCES rooms(id) ON DELETE CASCADE,
    ids TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS room_undo (
    room_id TEXT NOT NULL REFERENCES rooms(id) ON DELETE CASCADE,
    member_id TEXT NOT NULL,
    stacks TEXT NOT NULL,
    PRIMARY KEY (room_id, member_id)
);
CREATE TABLE IF NOT EXISTS room_life (
    room_id TEXT PRIMARY KEY REFERENCES rooms(id) ON DELETE CASCADE,
    used DOUBLE PRECISION NOT NULL,
    joined INTEGER NOT NULL,
    archived DOUBLE PRECISION
);
CREATE TABLE IF NOT EXISTS deleted_rooms (
    id TEXT PRIMARY KEY,
    deleted DOUBLE PRECISION NOT NULL,
    why TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS room_fence (
    room_id TEXT PRIMARY KEY,           -- no foreign key: a fence outlives nothing but is harmless
    epoch BIGINT NOT NULL               -- incremented by each node that takes the room over
);
"""

SCHEMA_VERSION = 1
MIGRATIONS: dict[int, str] = {0: SCHEMA_V1}  # version -> SQL that brings it to version + 1
