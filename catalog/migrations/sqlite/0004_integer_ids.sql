-- The same tables as migrations/postgres, in SQLite's types (timestamps RFC 3339 TEXT). Version 4
-- replaces versions 1-3, which keyed assets, sessions and jobs by UUID; a catalog made by them is
-- refused on open with a message that says how to re-index.
-- The catalog's tables, as in the system this replaces. States are TEXT with CHECK constraints so
-- both backends share one set of names; every timestamp is UTC.

CREATE TABLE categories (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    name        TEXT NOT NULL UNIQUE,
    description TEXT,
    color       TEXT,
    is_default  INTEGER NOT NULL DEFAULT 0,
    created_at  TEXT NOT NULL,
    updated_at  TEXT NOT NULL
);

CREATE TABLE image_assets (
    id               INTEGER PRIMARY KEY AUTOINCREMENT, -- the vector point id; never reused
    path             TEXT NOT NULL UNIQUE,
    created_at       TEXT NOT NULL,
    indexed_at       TEXT,
    thumbnail_path   TEXT,
    width            INTEGER,
    height           INTEGER,
    file_size        INTEGER,
    mime_type        TEXT,
    file_modified_at TEXT,
    content_hash     TEXT,
    category_id      INTEGER REFERENCES categories(id) ON DELETE SET NULL,
    training_status  TEXT NOT NULL DEFAULT 'pending'
                     CHECK (training_status IN ('pending', 'queued', 'training', 'trained', 'failed')),
    updated_at       TEXT NOT NULL,
    -- when a scan found the file gone from disk (its vector was removed then)
    deleted_at       TEXT
);
CREATE INDEX image_assets_category ON image_assets (category_id);
CREATE INDEX image_assets_status ON image_assets (training_status);

CREATE TABLE training_sessions (
    id               INTEGER PRIMARY KEY AUTOINCREMENT,
    name             TEXT NOT NULL,
    status           TEXT NOT NULL DEFAULT 'pending'
                     CHECK (status IN ('pending', 'running', 'paused', 'completed', 'cancelled', 'failed')),
    root_path        TEXT NOT NULL,
    category_id      INTEGER REFERENCES categories(id) ON DELETE SET NULL,
    total_images     INTEGER NOT NULL DEFAULT 0,
    processed_images INTEGER NOT NULL DEFAULT 0,
    failed_images    INTEGER NOT NULL DEFAULT 0,
    created_at       TEXT NOT NULL,
    updated_at       TEXT NOT NULL,
    started_at       TEXT,
    paused_at        TEXT,
    completed_at     TEXT,
    reset_at         TEXT,
    reset_reason     TEXT
);
CREATE INDEX training_sessions_status ON training_sessions (status);

CREATE TABLE training_subdirectories (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    session_id  INTEGER NOT NULL REFERENCES training_sessions(id) ON DELETE CASCADE,
    path        TEXT NOT NULL,
    name        TEXT NOT NULL,
    selected    INTEGER NOT NULL DEFAULT 1,
    image_count INTEGER NOT NULL DEFAULT 0,
    status      TEXT NOT NULL DEFAULT 'pending',
    UNIQUE (session_id, path)
);

CREATE TABLE training_jobs (
    id                 INTEGER PRIMARY KEY AUTOINCREMENT,
    session_id         INTEGER NOT NULL REFERENCES training_sessions(id) ON DELETE CASCADE,
    asset_id           INTEGER NOT NULL REFERENCES image_assets(id) ON DELETE CASCADE,
    status             TEXT NOT NULL DEFAULT 'pending'
                       CHECK (status IN ('pending', 'queued', 'running', 'completed', 'failed', 'cancelled')),
    broker_message_id  TEXT,
    progress           REAL NOT NULL DEFAULT 0,
    error_message      TEXT,
    processing_time_ms INTEGER,
    attempts           INTEGER NOT NULL DEFAULT 0,
    created_at         TEXT NOT NULL,
    updated_at         TEXT NOT NULL,
    started_at         TEXT,
    completed_at       TEXT,
    UNIQUE (session_id, asset_id)
);
CREATE INDEX training_jobs_session_status ON training_jobs (session_id, status);

CREATE TABLE training_evidence (
    id                 INTEGER PRIMARY KEY AUTOINCREMENT,
    asset_id           INTEGER NOT NULL REFERENCES image_assets(id) ON DELETE CASCADE,
    session_id         INTEGER NOT NULL REFERENCES training_sessions(id) ON DELETE CASCADE,
    model_name         TEXT NOT NULL,
    model_version      TEXT NOT NULL,
    embedding_checksum TEXT,
    device             TEXT,
    processing_time_ms INTEGER,
    error_message      TEXT,
    metadata_json      TEXT NOT NULL DEFAULT '{}',
    created_at         TEXT NOT NULL,
    UNIQUE (session_id, asset_id)               -- one per job: a redelivery adds nothing
);
CREATE INDEX training_evidence_asset ON training_evidence (asset_id);

CREATE TABLE vector_deletion_logs (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    deletion_type TEXT NOT NULL
                  CHECK (deletion_type IN ('ASSET', 'DIRECTORY', 'SESSION', 'CATEGORY', 'ORPHAN', 'FULL_RESET')),
    target        TEXT,
    vector_count  INTEGER NOT NULL,
    reason        TEXT,
    metadata_json TEXT NOT NULL DEFAULT '{}',
    created_at    TEXT NOT NULL
);
