//! Comparing two stored fingerprints, for the API and the UI alike.

use uuid::Uuid;

use super::{AppError, AppState, Caller};
use crate::compare::CompareOptions;
use crate::store::{ComparisonRow, NewVerdict, Role};

/// Compares two stored fingerprints against the stored controls and keeps the result
/// (shared by the API and the UI's compare page).
pub async fn compare_fingerprints(
    state: &AppState,
    caller: &Caller,
    reference_id: Uuid,
    suspect_id: Uuid,
) -> Result<ComparisonRow, AppError> {
    caller.require(Role::Analyst)?;
    let reference_row = state.store.get_fingerprint(reference_id).await?;
    let suspect_row = state.store.get_fingerprint(suspect_id).await?;
    let reference = state.store.load_fingerprint(&reference_row).await?;
    let suspect = state.store.load_fingerprint(&suspect_row).await?;
    let mut controls = Vec::new();
    for row in state
        .store
        .control_fingerprints(reference_row.probe_set_id, reference_row.model_id)
        .await?
    {
        if row.id != suspect_row.id && row.id != reference_row.id {
            controls.push(state.store.load_fingerprint(&row).await?);
        }
    }
    // The scan pipeline's comparison step (on the blocking pool), without the quantized
    // forms and the read-back, which need the reference model loaded: the report lists
    // those signals as unavailable.
    let against = crate::scan::Against {
        reference: &reference,
        controls: &controls,
        forms: &[],
    };
    let report = crate::scan::judge(against, &suspect, None, &CompareOptions::default()).await;
    let json = serde_json::to_value(&report).map_err(|e| AppError::Internal(e.to_string()))?;
    let row = state
        .store
        .add_comparison(
            reference_row.id,
            suspect_row.id,
            None,
            &json,
            Some(&NewVerdict {
                verdict: report.verdict.as_str().to_string(),
                confidence: Some(report.confidence),
                p_value: report.p_value,
            }),
        )
        .await?;
    state
        .audit(
            caller,
            "comparison.create",
            format!("comparison/{}", row.id),
            None,
        )
        .await?;
    Ok(row)
}
