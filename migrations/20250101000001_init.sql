-- The service's schema: models, probe sets, fingerprints with their raw observations,
-- comparisons and verdicts, the scan queue, schedules, API keys and the audit log.

CREATE TABLE api_keys (
    id          uuid PRIMARY KEY,
    name        text NOT NULL DEFAULT '',
    -- Hex SHA-256 of the whole key; the key itself is shown once and never stored.
    key_hash    text NOT NULL UNIQUE,
    -- The first characters of the key, so a person can tell keys apart in listings.
    prefix      text NOT NULL,
    role        text NOT NULL CHECK (role IN ('submitter', 'analyst', 'admin')),
    created_at  timestamptz NOT NULL DEFAULT now(),
    revoked     boolean NOT NULL DEFAULT false
);

CREATE TABLE audit_log (
    id          bigserial PRIMARY KEY,
    api_key_id  uuid REFERENCES api_keys (id),
    action      text NOT NULL,
    target      text NOT NULL,
    detail      jsonb,
    at          timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX audit_log_at ON audit_log (at);
CREATE INDEX audit_log_key ON audit_log (api_key_id, at);

-- References (held locally), suspects and controls (known-unrelated models).
CREATE TABLE models (
    id          uuid PRIMARY KEY,
    name        text NOT NULL UNIQUE,
    role        text NOT NULL CHECK (role IN ('reference', 'suspect', 'control')),
    -- 'local': a GGUF/safetensors path or hub repo id; 'http': an OpenAI-compatible URL.
    kind        text NOT NULL CHECK (kind IN ('local', 'http')),
    source      text NOT NULL,
    description text NOT NULL DEFAULT '',
    created_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX models_role ON models (role, name);

CREATE TABLE probe_sets (
    id          uuid PRIMARY KEY,
    name        text NOT NULL,
    version     text NOT NULL,
    hash        text NOT NULL,
    probe_count integer NOT NULL,
    -- The loaded, resolved set (provenance::probes::ProbeSet as JSON).
    content     jsonb NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    UNIQUE (name, version, hash)
);

-- The job queue. A worker owns a running scan while its lease is live.
CREATE TABLE scans (
    id                  uuid PRIMARY KEY,
    api_key_id          uuid REFERENCES api_keys (id),
    idempotency_key     text,
    suspect_kind        text NOT NULL CHECK (suspect_kind IN ('http', 'local')),
    -- http: base URL; local: path or hub repo id.
    suspect_source      text NOT NULL,
    suspect_model       text NOT NULL DEFAULT '',
    -- NAME of the server-side secret (environment variable) holding the suspect's key.
    suspect_secret      text,
    reference_model_id  uuid NOT NULL REFERENCES models (id),
    probe_set_id        uuid NOT NULL REFERENCES probe_sets (id),
    -- Probes of each kind asked (null: all) and samples per sampling probe (null: all).
    probes_per_kind     integer,
    max_samples         integer,
    schedule_id         uuid,
    status              text NOT NULL DEFAULT 'queued'
                        CHECK (status IN ('queued', 'running', 'done', 'failed', 'cancelled')),
    attempts            integer NOT NULL DEFAULT 0,
    max_attempts        integer NOT NULL DEFAULT 3,
    lease_owner         text,
    lease_expires_at    timestamptz,
    progress_done       integer NOT NULL DEFAULT 0,
    progress_total      integer NOT NULL DEFAULT 0,
    verdict             text,
    report              jsonb,
    error               text,
    created_at          timestamptz NOT NULL DEFAULT now(),
    started_at          timestamptz,
    finished_at         timestamptz,
    updated_at          timestamptz NOT NULL DEFAULT now()
);
-- Idempotency keys are scoped to the key that sent them.
CREATE UNIQUE INDEX scans_idempotency ON scans (api_key_id, idempotency_key)
    WHERE idempotency_key IS NOT NULL;
CREATE INDEX scans_claim ON scans (created_at) WHERE status = 'queued';
CREATE INDEX scans_lease ON scans (lease_expires_at) WHERE status = 'running';
CREATE INDEX scans_status_created ON scans (status, created_at DESC, id DESC);
CREATE INDEX scans_created ON scans (created_at DESC, id DESC);
CREATE INDEX scans_verdict ON scans (verdict, created_at DESC);
CREATE INDEX scans_reference ON scans (reference_model_id, created_at DESC);
CREATE INDEX scans_owner ON scans (api_key_id, created_at DESC);
CREATE INDEX scans_schedule ON scans (schedule_id, created_at DESC);

CREATE TABLE fingerprints (
    id                  uuid PRIMARY KEY,
    scan_id             uuid REFERENCES scans (id) ON DELETE SET NULL,
    -- Which side of its scan this fingerprint is ('reference' or 'suspect').
    side                text NOT NULL CHECK (side IN ('reference', 'suspect')),
    model_id            uuid REFERENCES models (id),
    model_describe      text NOT NULL,
    probe_set_id        uuid NOT NULL REFERENCES probe_sets (id),
    status              text NOT NULL DEFAULT 'partial' CHECK (status IN ('partial', 'complete')),
    is_control          boolean NOT NULL DEFAULT false,
    observation_count   integer NOT NULL DEFAULT 0,
    error_count         integer NOT NULL DEFAULT 0,
    -- The assembled document (model, capabilities, probe set, summary) once complete.
    document            jsonb,
    created_at          timestamptz NOT NULL DEFAULT now(),
    completed_at        timestamptz,
    UNIQUE (scan_id, side)
);
CREATE INDEX fingerprints_created ON fingerprints (created_at DESC, id DESC);
CREATE INDEX fingerprints_model ON fingerprints (model_id, created_at DESC);
CREATE INDEX fingerprints_control ON fingerprints (is_control) WHERE is_control;

-- Raw answers, one row per ask, so new metrics can be computed without asking again and a
-- resumed scan never asks a done probe twice.
CREATE TABLE observations (
    id              bigserial PRIMARY KEY,
    fingerprint_id  uuid NOT NULL REFERENCES fingerprints (id) ON DELETE CASCADE,
    probe_id        text NOT NULL,
    kind            text NOT NULL,
    sample_index    integer NOT NULL,
    ok              boolean NOT NULL,
    -- provenance::fingerprint::Observation as JSON.
    data            jsonb NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT now(),
    UNIQUE (fingerprint_id, probe_id, sample_index)
);

CREATE TABLE comparisons (
    id                          uuid PRIMARY KEY,
    reference_fingerprint_id    uuid NOT NULL REFERENCES fingerprints (id),
    suspect_fingerprint_id      uuid NOT NULL REFERENCES fingerprints (id),
    scan_id                     uuid REFERENCES scans (id) ON DELETE SET NULL,
    report                      jsonb NOT NULL,
    created_at                  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX comparisons_scan ON comparisons (scan_id);

CREATE TABLE verdicts (
    id              uuid PRIMARY KEY,
    comparison_id   uuid NOT NULL UNIQUE REFERENCES comparisons (id) ON DELETE CASCADE,
    verdict         text NOT NULL
                    CHECK (verdict IN ('identical', 'derived', 'distilled', 'unrelated', 'inconclusive')),
    confidence      double precision,
    p_value         double precision,
    created_at      timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX verdicts_verdict ON verdicts (verdict, created_at DESC);

CREATE TABLE schedules (
    id                  uuid PRIMARY KEY,
    name                text NOT NULL,
    cron                text NOT NULL,
    suspect_kind        text NOT NULL CHECK (suspect_kind IN ('http', 'local')),
    suspect_source      text NOT NULL,
    suspect_model       text NOT NULL DEFAULT '',
    suspect_secret      text,
    reference_model_id  uuid NOT NULL REFERENCES models (id),
    probe_set_id        uuid NOT NULL REFERENCES probe_sets (id),
    probes_per_kind     integer,
    max_samples         integer,
    webhook_url         text,
    -- NAME of the server-side secret holding the webhook's HMAC key.
    webhook_secret_name text,
    -- Share of greedy answers that may change between runs before the webhook fires.
    drift_threshold     double precision NOT NULL DEFAULT 0.2,
    enabled             boolean NOT NULL DEFAULT true,
    last_run_at         timestamptz,
    next_run_at         timestamptz NOT NULL,
    last_scan_id        uuid,
    created_by          uuid REFERENCES api_keys (id),
    created_at          timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX schedules_due ON schedules (next_run_at) WHERE enabled;
ALTER TABLE scans ADD CONSTRAINT scans_schedule_fk
    FOREIGN KEY (schedule_id) REFERENCES schedules (id) ON DELETE SET NULL;
