//! The scheduler: due schedules become queued scans; after each scheduled run the new
//! suspect fingerprint is set against the previous run's, and a change of verdict or an
//! answer drift beyond the schedule's threshold fires its webhook.

use std::time::Duration;

use chrono::{DateTime, Utc};
use croner::Cron;
use tokio::sync::watch;
use uuid::Uuid;

use super::webhook::{self, Delivery};
use super::WorkerConfig;
use crate::fingerprint::Fingerprint;
use crate::probes::ProbeKind;
use crate::secrets::secret_value;
use crate::store::{ScanRow, Side, Store};

/// Parses a cron expression (5 fields, or 6 with seconds first).
pub fn validate_cron(expr: &str) -> Result<Cron, String> {
    Cron::new(expr)
        .with_seconds_optional()
        .parse()
        .map_err(|e| format!("invalid cron expression {expr:?}: {e}"))
}

/// The first time strictly after `after` that `expr` names.
pub fn next_run(expr: &str, after: DateTime<Utc>) -> Option<DateTime<Utc>> {
    validate_cron(expr)
        .ok()?
        .find_next_occurrence(&after, false)
        .ok()
}

/// Fires due schedules every `tick` until `shutdown`.
pub async fn run_scheduler(store: Store, tick: Duration, mut shutdown: watch::Receiver<bool>) {
    loop {
        if *shutdown.borrow() {
            return;
        }
        loop {
            match store
                .fire_due_schedule(|s| next_run(&s.cron, Utc::now()))
                .await
            {
                Ok(Some((schedule, scan))) => {
                    tracing::info!(schedule = %schedule.id, scan = %scan.id, "schedule fired");
                    let target = format!("scan/{}", scan.id);
                    let detail = serde_json::json!({ "schedule_id": schedule.id });
                    if let Err(e) = store
                        .audit(None, "schedule.fire", &target, Some(detail))
                        .await
                    {
                        tracing::warn!(error = %e, "audit write failed");
                    }
                }
                Ok(None) => break,
                Err(e) => {
                    tracing::warn!(error = %e, "firing schedules failed");
                    break;
                }
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(tick) => {}
            _ = shutdown.changed() => {}
        }
    }
}

/// Share of greedy probes answered by both runs whose answer text changed.
pub fn answer_drift(previous: &Fingerprint, current: &Fingerprint) -> Option<f64> {
    let mut compared = 0usize;
    let mut changed = 0usize;
    for obs in current
        .observations
        .iter()
        .filter(|o| o.kind != ProbeKind::Sampling && o.is_ok())
    {
        let Some(before) = previous.find(&obs.probe_id, obs.sample_index) else {
            continue;
        };
        if !before.is_ok() {
            continue;
        }
        compared += 1;
        if before.text() != obs.text() {
            changed += 1;
        }
    }
    (compared > 0).then(|| changed as f64 / compared as f64)
}

/// Compares a finished scheduled run with the one before and fires the webhook on a
/// change. Problems are logged, never fatal: the scan itself is done.
pub(super) async fn after_scheduled_run(
    store: &Store,
    schedule_id: Uuid,
    finished: &ScanRow,
    current: &Fingerprint,
    config: &WorkerConfig,
) {
    let schedule = match store.get_schedule(schedule_id).await {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(schedule = %schedule_id, error = %e, "schedule gone");
            return;
        }
    };
    let Ok(Some(previous)) = store
        .previous_scheduled_scan(schedule_id, finished.id)
        .await
    else {
        return; // The first run is the baseline.
    };
    let previous_print = match previous_suspect_print(store, previous.id).await {
        Some(p) => p,
        None => return,
    };
    let drift = answer_drift(&previous_print, current);
    let verdict_changed = previous.verdict != finished.verdict;
    let drifted = drift.is_some_and(|d| d > schedule.drift_threshold);
    if !(verdict_changed || drifted) {
        return;
    }
    let Some(url) = schedule.webhook_url.clone() else {
        return;
    };
    let payload = serde_json::json!({
        "event": if verdict_changed { "verdict_changed" } else { "drift" },
        "schedule_id": schedule.id,
        "schedule_name": schedule.name,
        "scan_id": finished.id,
        "previous_scan_id": previous.id,
        "verdict": finished.verdict,
        "previous_verdict": previous.verdict,
        "answer_drift": drift,
        "drift_threshold": schedule.drift_threshold,
        "at": Utc::now(),
    });
    let secret = schedule
        .webhook_secret_name
        .as_deref()
        .and_then(secret_value);
    let delivery = Delivery {
        allow_private_targets: config.allow_private_targets,
        ..Delivery::default()
    };
    let store = store.clone();
    // Delivery retries for a while; the worker moves on to the next scan meanwhile.
    tokio::spawn(async move {
        let target = format!("schedule/{}", schedule.id);
        match webhook::deliver(
            &url,
            secret.as_deref().map(str::as_bytes),
            &payload,
            &delivery,
        )
        .await
        {
            Ok(attempts) => {
                tracing::info!(schedule = %schedule.id, attempts, "webhook delivered");
                let _ = store
                    .audit(None, "webhook.delivered", &target, Some(payload))
                    .await;
            }
            Err(e) => {
                tracing::warn!(schedule = %schedule.id, error = %e, "webhook failed");
                let detail = serde_json::json!({ "error": e.to_string() });
                let _ = store
                    .audit(None, "webhook.failed", &target, Some(detail))
                    .await;
            }
        }
    });
}

async fn previous_suspect_print(store: &Store, scan_id: Uuid) -> Option<Fingerprint> {
    let rows = store.scan_fingerprints(scan_id).await.ok()?;
    let row = rows.iter().find(|r| r.side == Side::Suspect)?;
    store.load_fingerprint(row).await.ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cron_next_run() {
        let t = DateTime::parse_from_rfc3339("2025-01-01T10:00:30Z")
            .expect("valid")
            .with_timezone(&Utc);
        let next = next_run("0 * * * *", t).expect("has a next run");
        assert_eq!(next.to_rfc3339(), "2025-01-01T11:00:00+00:00");
        let every_second = next_run("* * * * * *", t).expect("has a next run");
        assert_eq!(every_second.to_rfc3339(), "2025-01-01T10:00:31+00:00");
        assert!(validate_cron("not a cron").is_err());
    }
}
