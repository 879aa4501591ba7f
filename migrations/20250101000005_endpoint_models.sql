-- A model behind an OpenAI-compatible URL (a reference served by its owner, as well as a
-- registered suspect) needs the model name that endpoint serves, and may name the
-- server-side secret that holds its API key (the name only, never the key).
ALTER TABLE models ADD COLUMN served_model text NOT NULL DEFAULT '';
ALTER TABLE models ADD COLUMN secret text;
