-- The catalog's tables, as in the system this replaces, with its integer ids (version 4 replaces
-- versions 1-3, which keyed assets, sessions and jobs by UUID; a catalog made by them is refused on
-- open with a message that says how to re-index). States are TEXT with CHECK constraints so
-- both backends share one set of names; every timestamp is UTC.

CREATE TABLE categories (
    id          BIGSERIAL PRIMARY KEY,
    name        TEXT NOT NULL UNIQUE,
    description TEXT,
    color       TEXT,
    is_default  BOOLEAN NOT NULL DEFAULT FALSE,
    created_at  TIMESTAMPTZ NOT NULL,
    updated_at  TIMESTAMPTZ NOT NULL
);

CREATE TABLE image_assets (
    id               BIGSERIAL PRIMARY KEY,       -- the vector point id; never reused
    path             TEXT NOT NULL UNIQUE,
    created_at       TIMESTAMPTZ NOT NULL,
    indexed_at       TIMESTAMPTZ,
    thumbnail_path   TEXT,
    width            INTEGER,
    height           INTEGER,
    file_size        BIGINT,
    mime_type        TEXT,
    file_modified_at TIMESTAMPTZ,
    content_hash     TEXT,
    category_id      BIGINT REFERENCES categories(id) ON DELETE SET NULL,
    training_status  TEXT NOT NULL DEFAULT 'pending'
                     CHECK (training_status IN ('pending', 'queued', 'training', 'trained', 'failed')),
    updated_at       TIMESTAMPTZ NOT NULL,
    -- when a scan found the file gone from disk (its vector was removed then)
    deleted_at       TIMESTAMPTZ
);
CREATE INDEX image_assets_category ON image_assets (category_id);
CREATE INDEX image_assets_status ON image_assets (training_status);

CREATE TABLE training_sessions (
    id               BIGSERIAL PRIMARY KEY,
    name             TEXT NOT NULL,
    status           TEXT NOT NULL DEFAULT 'pending'
                     CHECK (status IN ('pending', 'running', 'paused', 'completed', 'cancelled', 'failed')),
    root_path        TEXT NOT NULL,
    category_id      BIGINT REFERENCES categories(id) ON DELETE SET NULL,
    total_images     BIGINT NOT NULL DEFAULT 0,
    processed_images BIGINT NOT NULL DEFAULT 0,
    failed_images    BIGINT NOT NULL DEFAULT 0,
    created_at       TIMESTAMPTZ NOT NULL,
    updated_at       TIMESTAMPTZ NOT NULL,
    started_at       TIMESTAMPTZ,
    paused_at        TIMESTAMPTZ,
    completed_at     TIMESTAMPTZ,
    reset_at         TIMESTAMPTZ,
    reset_reason     TEXT
);
CREATE INDEX training_sessions_status ON training_sessions (status);

CREATE TABLE training_subdirectories (
    id          BIGSERIAL PRIMARY KEY,
    session_id  BIGINT NOT NULL REFERENCES training_sessions(id) ON DELETE CASCADE,
    path        TEXT NOT NULL,
    name        TEXT NOT NULL,
    selected    BOOLEAN NOT NULL DEFAULT TRUE,
    image_count BIGINT NOT NULL DEFAULT 0,
    status      TEXT NOT NULL DEFAULT 'pending',
    UNIQUE (session_id, path)
);

CREATE TABLE training_jobs (
    id                 BIGSERIAL PRIMARY KEY,
    session_id         BIGINT NOT NULL REFERENCES training_sessions(id) ON DELETE CASCADE,
    asset_id           BIGINT NOT NULL REFERENCES image_assets(id) ON DELETE CASCADE,
    status             TEXT NOT NULL DEFAULT 'pending'
                       CHECK (status IN ('pending', 'queued', 'running', 'completed', 'failed', 'cancelled')),
    broker_message_id  TEXT,
    progress           DOUBLE PRECISION NOT NULL DEFAULT 0,
    error_message      TEXT,
    processing_time_ms BIGINT,
    attempts           INTEGER NOT NULL DEFAULT 0,
    created_at         TIMESTAMPTZ NOT NULL,
    updated_at         TIMESTAMPTZ NOT NULL,
    started_at         TIMESTAMPTZ,
    completed_at       TIMESTAMPTZ,
    UNIQUE (session_id, asset_id)
);
CREATE INDEX training_jobs_session_status ON training_jobs (session_id, status);

CREATE TABLE training_evidence (
    id                 BIGSERIAL PRIMARY KEY,
    asset_id           BIGINT NOT NULL REFERENCES image_assets(id) ON DELETE CASCADE,
    session_id         BIGINT NOT NULL REFERENCES training_sessions(id) ON DELETE CASCADE,
    model_name         TEXT NOT NULL,
    model_version      TEXT NOT NULL,
    embedding_checksum TEXT,
    device             TEXT,
    processing_time_ms BIGINT,
    error_message      TEXT,
    metadata_json      JSONB NOT NULL DEFAULT '{}',
    created_at         TIMESTAMPTZ NOT NULL,
    UNIQUE (session_id, asset_id)               -- one per job: a redelivery adds nothing
);
CREATE INDEX training_evidence_asset ON training_evidence (asset_id);

CREATE TABLE vector_deletion_logs (
    id            BIGSERIAL PRIMARY KEY,
    deletion_type TEXT NOT NULL
                  CHECK (deletion_type IN ('ASSET', 'DIRECTORY', 'SESSION', 'CATEGORY', 'ORPHAN', 'FULL_RESET')),
    target        TEXT,
    vector_count  BIGINT NOT NULL,
    reason        TEXT,
    metadata_json JSONB NOT NULL DEFAULT '{}',
    created_at    TIMESTAMPTZ NOT NULL
);
