//! Which early stop a suspect gets: one that samples whatever temperature it is asked for
//! and gives no log-probabilities is judged on its samples (`sampled_phase`), every other
//! on the sequential test over logits or greedy text (`sequential_phase`).

use super::sampled_phase::sampled_phase;
use super::sequential_phase::{sequential_phase, Against, AnswerSource, EarlyStop, TextEarlyStop};
use crate::compare::CompareOptions;
use crate::fingerprint::ModelDescription;
use crate::probes::ProbeSet;

/// Runs the early stop that fits `suspect`'s capabilities: the partial fingerprint and its
/// report when the verdict is `identical`, otherwise what the scan must go on with.
pub async fn early_stop<S: AnswerSource>(
    against: Against<'_>,
    set: &ProbeSet,
    suspect: ModelDescription,
    opts: &CompareOptions,
    source: &mut S,
    text: Option<TextEarlyStop<'_>>,
) -> Result<EarlyStop, S::Error> {
    let caps = &suspect.capabilities;
    match text {
        Some(text) if caps.max_top_logprobs == 0 && caps.ignores_temperature => {
            sampled_phase(against, set, suspect, opts, source, text, Vec::new()).await
        }
        text => sequential_phase(against, set, suspect, opts, source, text).await,
    }
}
