-- Browser sessions of the analyst UI: signing in with an API key yields a random
-- session token (kept only as its SHA-256 here) and a CSRF token for the session's forms.
CREATE TABLE ui_sessions (
    token_hash  text PRIMARY KEY,
    api_key_id  uuid NOT NULL REFERENCES api_keys (id) ON DELETE CASCADE,
    csrf_token  text NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    expires_at  timestamptz NOT NULL
);
CREATE INDEX ui_sessions_expires ON ui_sessions (expires_at);

-- The similarity map and the compare page look comparisons up by their fingerprints.
CREATE INDEX comparisons_suspect ON comparisons (suspect_fingerprint_id, created_at DESC);
CREATE INDEX comparisons_reference ON comparisons (reference_fingerprint_id);
