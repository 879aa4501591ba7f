-- Whether a scan may stop once the sequential test decides (the default for submitted
-- scans). Scheduled runs ask every probe: drift is measured probe by probe against the
-- previous run.
ALTER TABLE scans ADD COLUMN early_stop boolean NOT NULL DEFAULT true;
