-- Which model is behind an endpoint: one identification is one scan of the suspect per
-- reference; the scans share the suspect's answers (each probe is asked once) and the
-- ranking is read from their verdicts, so an identification has no status of its own.
CREATE TABLE identifications (
    id              uuid PRIMARY KEY,
    api_key_id      uuid REFERENCES api_keys (id),
    suspect_kind    text NOT NULL CHECK (suspect_kind IN ('http', 'local')),
    suspect_source  text NOT NULL,
    suspect_model   text NOT NULL DEFAULT '',
    -- NAME of the server-side secret holding the suspect's key.
    suspect_secret  text,
    probe_set_id    uuid NOT NULL REFERENCES probe_sets (id),
    created_at      timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX identifications_created ON identifications (created_at DESC, id DESC);
CREATE INDEX identifications_owner ON identifications (api_key_id, created_at DESC);

ALTER TABLE scans ADD COLUMN identification_id uuid REFERENCES identifications (id);
CREATE INDEX scans_identification ON scans (identification_id)
    WHERE identification_id IS NOT NULL;
