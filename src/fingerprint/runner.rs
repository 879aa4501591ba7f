//! The fingerprint runner: every ask of a probe set through one endpoint, with bounded
//! concurrency, retries of transient failures, a progress bar and a resumable log.

use std::io::IsTerminal;
use std::time::{Duration, Instant};

use futures::stream::{self, StreamExt};
use indicatif::{ProgressBar, ProgressStyle};

use super::log::LogHeader;
use super::{
    Features, Fingerprint, FingerprintError, ModelDescription, Observation, ObservationLog,
    ProbeSetRef, FORMAT_VERSION,
};
use crate::endpoint::{
    Capabilities, ChatMessage, EndpointError, ModelEndpoint, ProbeRequest, ProbeResponse,
    PromptForm,
};
use crate::probes::{Probe, ProbeKind, ProbeSet, RefusalLexicon};

/// Longest wait between two tries of one ask.
const MAX_BACKOFF: Duration = Duration::from_secs(30);

#[derive(Debug, Clone)]
pub struct RunOptions {
    /// Asks in flight at once.
    pub concurrency: usize,
    /// Seed of every greedy ask; sampling probes use `base_seed + sample_index` (or the
    /// probe's own seed in place of `base_seed`).
    pub base_seed: u64,
    /// Tries per ask for transient failures (rate limits, 5xx, timeouts). Remote
    /// endpoints retry on their own too; this also covers a full local queue.
    pub max_attempts: u32,
    /// First wait between tries; doubles each time.
    pub retry_backoff: Duration,
    /// Show a progress bar (only ever on a terminal).
    pub progress: bool,
    /// Refusal markers for the stored features; the built-in list when `None`.
    pub lexicon: Option<RefusalLexicon>,
}

impl Default for RunOptions {
    fn default() -> Self {
        Self {
            concurrency: 4,
            base_seed: 0,
            max_attempts: 3,
            retry_backoff: Duration::from_millis(500),
            progress: true,
            lexicon: None,
        }
    }
}

/// One ask: a probe and which of its samples.
#[derive(Debug, Clone, Copy)]
pub struct Job<'a> {
    pub probe: &'a Probe,
    pub sample_index: usize,
}

/// Every ask of the set in set order: one per probe, `samples` per sampling probe.
pub fn plan(set: &ProbeSet) -> Vec<Job<'_>> {
    set.probes
        .iter()
        .flat_map(|probe| {
            (0..asks(probe)).map(move |sample_index| Job {
                probe,
                sample_index,
            })
        })
        .collect()
}

fn asks(probe: &Probe) -> usize {
    if probe.kind == ProbeKind::Sampling {
        probe.samples.max(1)
    } else {
        // Greedy asks give the same answer every time.
        1
    }
}

/// A fixed 64-bit mix of a probe id and sample index (FNV-1a): the same on every machine
/// and run, different for every ask.
fn ask_salt(probe_id: &str, sample_index: usize) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in probe_id.bytes().chain((sample_index as u64).to_le_bytes()) {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// The request actually sent for one ask, given what the endpoint can do.
pub fn build_request(
    probe: &Probe,
    sample_index: usize,
    caps: &Capabilities,
    opts: &RunOptions,
) -> ProbeRequest {
    let mut request = probe.to_request();
    let seed = probe.seed.unwrap_or(opts.base_seed);
    if probe.kind == ProbeKind::Sampling {
        request.seed = Some(seed.wrapping_add(sample_index as u64));
    } else {
        // Fingerprints compare single answers, so every other kind is greedy.
        request.temperature = 0.0;
        request.seed = Some(seed);
    }
    // An endpoint that samples whatever temperature it is asked for but honours the seed
    // would draw every answer from one random stream (the same uniforms at the same
    // positions of every answer), and the samples of one prompt from streams shared with
    // every other prompt: each ask gets a seed of its own, so its draws are independent.
    if caps.ignores_temperature {
        request.seed = request.seed.map(|s| s ^ ask_salt(&probe.id, sample_index));
    }
    request.top_logprobs = request.top_logprobs.min(caps.max_top_logprobs);
    if probe.kind == ProbeKind::Tokenizer {
        request.max_tokens = 1;
        request.top_logprobs = 0;
        // A chat-only endpoint still counts the string's tokens, plus a constant for the
        // template, which the tokenizer comparison allows for.
        if let PromptForm::Raw { prompt } = &request.prompt {
            if !caps.raw_completion && caps.chat {
                request.prompt = PromptForm::Chat {
                    messages: vec![ChatMessage {
                        role: "user".to_string(),
                        content: prompt.clone(),
                    }],
                };
            }
        }
    }
    request
}

enum Answer {
    Response(ProbeResponse),
    TokenIds(Vec<u32>),
}

/// Asks one probe once, retrying transient failures; never fails: a failure for good is
/// an observation with its error. Exposed for sequential scans that ask one at a time.
pub async fn observe(
    endpoint: &dyn ModelEndpoint,
    caps: &Capabilities,
    probe: &Probe,
    sample_index: usize,
    opts: &RunOptions,
) -> Observation {
    let started = Instant::now();
    let request = build_request(probe, sample_index, caps, opts);
    let mut use_tokenize = probe.kind == ProbeKind::Tokenizer && caps.tokenize;
    let max_attempts = opts.max_attempts.max(1);
    let mut attempts = 0u32;
    let (answer, error) = loop {
        attempts += 1;
        let outcome = if use_tokenize {
            match endpoint.tokenize(&probe.text).await {
                Err(EndpointError::Unsupported(_)) => {
                    // Capabilities promised more than the endpoint does: count from usage.
                    use_tokenize = false;
                    attempts -= 1;
                    continue;
                }
                other => other.map(Answer::TokenIds),
            }
        } else {
            endpoint.run(&request).await.map(Answer::Response)
        };
        match outcome {
            Ok(answer) => break (Some(answer), None),
            Err(err) if err.is_transient() && attempts < max_attempts => {
                let factor = 2u32.saturating_pow(attempts - 1);
                let wait = opts.retry_backoff.saturating_mul(factor).min(MAX_BACKOFF);
                tracing::debug!(probe = %probe.id, attempts, "retrying after {err}");
                tokio::time::sleep(wait).await;
            }
            Err(err) => break (None, Some(err)),
        }
    };

    let (mut response, mut token_ids) = (None, None);
    let mut error = error;
    match answer {
        Some(Answer::Response(r)) => {
            if probe.kind == ProbeKind::Tokenizer && r.usage.is_none() {
                error = Some(EndpointError::Unsupported(
                    "no usage counts to count the prompt's tokens with".to_string(),
                ));
            }
            response = Some(r);
        }
        Some(Answer::TokenIds(ids)) => token_ids = Some(ids),
        None => {}
    }
    // Only where asking is free (the local reference): a suspect is never asked twice.
    let chat_prompt_tokens = match (&token_ids, caps.chat && endpoint.asks_are_free()) {
        (Some(_), true) => chat_count(endpoint, &request, &probe.text).await,
        _ => None,
    };
    Observation {
        probe_id: probe.id.clone(),
        kind: probe.kind,
        sample_index,
        request,
        response,
        token_ids,
        chat_prompt_tokens,
        error,
        attempts,
        latency_ms: started.elapsed().as_millis() as u64,
    }
}

/// `text`'s prompt-token count as one user message through the endpoint's chat template
/// (usage of a one-token chat request); `None` when the endpoint does not say.
async fn chat_count(
    endpoint: &dyn ModelEndpoint,
    request: &ProbeRequest,
    text: &str,
) -> Option<u32> {
    let chat = ProbeRequest {
        prompt: PromptForm::Chat {
            messages: vec![ChatMessage {
                role: "user".to_string(),
                content: text.to_string(),
            }],
        },
        max_tokens: 1,
        top_logprobs: 0,
        ..request.clone()
    };
    let response = endpoint.run(&chat).await.ok()?;
    response.usage.map(|u| u.prompt_tokens)
}

fn progress_bar(total: usize, done: usize, show: bool) -> ProgressBar {
    if !show || !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(total as u64);
    if let Ok(style) =
        ProgressStyle::with_template("{spinner} [{bar:40}] {pos}/{len} asks  {msg}  eta {eta}")
    {
        bar.set_style(style.progress_chars("=> "));
    }
    bar.set_position(done as u64);
    bar
}

/// Runs every ask of `set` through `endpoint`, skipping those `store` already holds an
/// answer for, and appends each new observation to `store` as it arrives.
///
/// Failures of single asks are recorded, not returned; only an unusable endpoint
/// (capabilities) or log (I/O, belongs to another run) stops the run.
pub async fn run(
    set: &ProbeSet,
    endpoint: &dyn ModelEndpoint,
    opts: &RunOptions,
    store: &mut ObservationLog,
) -> Result<Fingerprint, FingerprintError> {
    let caps = endpoint
        .capabilities()
        .await
        .map_err(FingerprintError::Capabilities)?;
    let describe = endpoint.describe();
    store.bind(LogHeader {
        model: describe.clone(),
        probe_set_hash: set.hash.clone(),
    })?;

    let all = plan(set);
    let todo: Vec<Job> = all
        .iter()
        .copied()
        .filter(|job| store.done(&job.probe.id, job.sample_index).is_none())
        .collect();
    tracing::info!(
        "{}: {} asks, {} already done",
        describe,
        all.len(),
        all.len() - todo.len()
    );

    let bar = progress_bar(all.len(), all.len() - todo.len(), opts.progress);
    let caps_ref = &caps;
    let todo_ref = &todo;
    // The stream carries indices, not borrowed jobs: a closure taking a borrowed argument
    // makes the future fail to be `Send` for every lifetime (rustc's higher-ranked
    // lifetime limitation), and then `run` could not be spawned on the runtime.
    let mut answers = stream::iter(0..todo.len())
        .map(|i| {
            let job = todo_ref[i];
            observe(endpoint, caps_ref, job.probe, job.sample_index, opts)
        })
        .buffer_unordered(opts.concurrency.max(1));
    let mut failed = 0usize;
    while let Some(obs) = answers.next().await {
        if !obs.is_ok() {
            failed += 1;
            bar.set_message(format!("{failed} failed"));
        }
        store.append(&obs)?;
        bar.inc(1);
    }
    drop(answers);
    bar.finish_and_clear();

    let observations: Vec<Observation> = all
        .iter()
        .filter_map(|job| store.latest(&job.probe.id, job.sample_index).cloned())
        .collect();
    let lexicon = match &opts.lexicon {
        Some(lexicon) => lexicon,
        None => crate::probes::refusal::default_lexicon(),
    };
    let features = Features::extract(&observations, lexicon);
    Ok(Fingerprint {
        format_version: FORMAT_VERSION,
        model: ModelDescription {
            describe,
            capabilities: caps,
        },
        probe_set: ProbeSetRef::of(set),
        created_at: super::rfc3339_utc(std::time::SystemTime::now()),
        observations,
        features,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::endpoint::{TokenLogprobs, TopLogprob, Usage};
    use crate::probes::ProbeForm;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// Answers from a formula; fails the first try of every ask whose text says "flaky",
    /// and every try of asks whose text says "broken".
    struct Fake {
        caps: Capabilities,
        calls: AtomicUsize,
        flaky_seen: std::sync::Mutex<std::collections::HashSet<String>>,
    }

    impl Fake {
        fn new(caps: Capabilities) -> Fake {
            Fake {
                caps,
                calls: AtomicUsize::new(0),
                flaky_seen: Default::default(),
            }
        }
    }

    #[async_trait::async_trait]
    impl ModelEndpoint for Fake {
        fn describe(&self) -> String {
            "fake".into()
        }
        async fn capabilities(&self) -> Result<Capabilities, EndpointError> {
            Ok(self.caps.clone())
        }
        async fn run(&self, request: &ProbeRequest) -> Result<ProbeResponse, EndpointError> {
            self.calls.fetch_add(1, Ordering::SeqCst);
            let text = match &request.prompt {
                PromptForm::Raw { prompt } => prompt.clone(),
                PromptForm::Chat { messages } => messages
                    .last()
                    .map(|m| m.content.clone())
                    .unwrap_or_default(),
            };
            if text.contains("broken") {
                return Err(EndpointError::Server("down".into()));
            }
            if text.contains("flaky") {
                let key = format!("{text}/{:?}", request.seed);
                if self.flaky_seen.lock().expect("lock").insert(key) {
                    return Err(EndpointError::RateLimited("slow down".into()));
                }
            }
            let top: Vec<TopLogprob> = (0..request.top_logprobs)
                .map(|i| TopLogprob {
                    id: Some(i as u32),
                    token: format!("t{i}"),
                    bytes: format!("t{i}").into_bytes(),
                    logprob: -(i as f32) - 0.5,
                })
                .collect();
            Ok(ProbeResponse {
                text: format!("{} seed={:?} t={}", text, request.seed, request.temperature),
                tokens: vec![TokenLogprobs {
                    id: Some(0),
                    token: "t0".into(),
                    bytes: b"t0".to_vec(),
                    logprob: -0.5,
                    top,
                }],
                usage: Some(Usage {
                    prompt_tokens: text.split_whitespace().count() as u32 + 1,
                    completion_tokens: 1,
                }),
                finish_reason: Some("length".into()),
                latency_ms: 0,
            })
        }
        async fn tokenize(&self, text: &str) -> Result<Vec<u32>, EndpointError> {
            self.calls.fetch_add(1, Ordering::SeqCst);
            Ok((0..text.split_whitespace().count() as u32).collect())
        }
    }

    fn probe(id: &str, kind: ProbeKind, text: &str) -> Probe {
        let d = kind.defaults();
        Probe {
            id: id.into(),
            kind,
            form: d.form,
            text: text.into(),
            system: None,
            max_tokens: d.max_tokens,
            temperature: if kind == ProbeKind::Sampling {
                1.0
            } else {
                0.7
            },
            top_p: d.top_p,
            samples: if kind == ProbeKind::Sampling { 3 } else { 1 },
            top_logprobs: d.top_logprobs,
            seed: None,
            stop: Vec::new(),
            category: None,
            expect_refusal: None,
            lang: None,
            tags: Vec::new(),
        }
    }

    fn set() -> ProbeSet {
        ProbeSet {
            name: "t".into(),
            version: "1".into(),
            hash: "abc".into(),
            probes: vec![
                probe("l", ProbeKind::Logit, "the sky is"),
                probe("t", ProbeKind::Tokenizer, "a b c"),
                probe("s", ProbeKind::Sampling, "pick one"),
                probe("f", ProbeKind::Style, "flaky one"),
                probe("b", ProbeKind::Style, "broken one"),
            ],
        }
    }

    fn caps(logprobs: usize, tokenize: bool) -> Capabilities {
        Capabilities {
            chat: true,
            raw_completion: false,
            max_top_logprobs: logprobs,
            usage: true,
            tokenize,
            ignores_temperature: false,
            refused_params: Vec::new(),
        }
    }

    fn opts() -> RunOptions {
        RunOptions {
            concurrency: 3,
            base_seed: 7,
            retry_backoff: Duration::from_millis(1),
            progress: false,
            ..RunOptions::default()
        }
    }

    #[test]
    fn a_sampler_that_ignores_temperature_gets_a_seed_per_ask() {
        let greedy = [
            probe("a", ProbeKind::Style, "x"),
            probe("b", ProbeKind::Style, "y"),
        ];
        let sampled = probe("s", ProbeKind::Sampling, "z");
        let seeds = |c: &Capabilities| -> Vec<Option<u64>> {
            greedy
                .iter()
                .map(|p| build_request(p, 0, c, &opts()).seed)
                .chain((0..2).map(|i| build_request(&sampled, i, c, &opts()).seed))
                .collect()
        };
        let honours = caps(5, false);
        assert_eq!(seeds(&honours), [Some(7), Some(7), Some(7), Some(8)]);
        let ignores = Capabilities {
            ignores_temperature: true,
            ..honours
        };
        let mut salted = seeds(&ignores);
        assert_eq!(salted, seeds(&ignores), "the same on every run");
        salted.sort();
        salted.dedup();
        assert_eq!(salted.len(), 4, "{salted:?}");
    }

    #[tokio::test]
    async fn runs_every_ask_and_keeps_failures() {
        let fake = Fake::new(caps(5, true));
        let mut log = ObservationLog::in_memory();
        let fp = run(&set(), &fake, &opts(), &mut log).await.expect("runs");
        let keys: Vec<(&str, usize)> = fp
            .observations
            .iter()
            .map(|o| (o.probe_id.as_str(), o.sample_index))
            .collect();
        assert_eq!(
            keys,
            [
                ("l", 0),
                ("t", 0),
                ("s", 0),
                ("s", 1),
                ("s", 2),
                ("f", 0),
                ("b", 0)
            ]
        );
        let logit = &fp.observations[0];
        assert_eq!(logit.request.top_logprobs, 5, "capped by capabilities");
        assert_eq!(
            logit.request.temperature, 0.0,
            "greedy kinds are forced to 0"
        );
        assert_eq!(
            fp.observations[1].token_ids.as_deref(),
            Some(&[0, 1, 2][..])
        );
        let seeds: Vec<Option<u64>> = fp.observations[2..5]
            .iter()
            .map(|o| o.request.seed)
            .collect();
        assert_eq!(seeds, [Some(7), Some(8), Some(9)]);
        assert_eq!(fp.observations[2].request.temperature, 1.0);
        assert_eq!(fp.observations[5].attempts, 2, "transient failure retried");
        assert!(fp.observations[5].is_ok());
        let broken = &fp.observations[6];
        assert_eq!(broken.attempts, 3);
        assert!(matches!(broken.error, Some(EndpointError::Server(_))));
        assert!(fp.features.logprobs);
        assert_eq!(fp.features.token_counts.get("t"), Some(&3));
        assert_eq!(fp.features.errors.get("server"), Some(&1));
    }

    #[tokio::test]
    async fn without_logprobs_or_tokenize_asks_for_none_and_counts_usage() {
        let fake = Fake::new(caps(0, false));
        let mut log = ObservationLog::in_memory();
        let fp = run(&set(), &fake, &opts(), &mut log).await.expect("runs");
        assert_eq!(fp.observations[0].request.top_logprobs, 0);
        let tok = &fp.observations[1];
        assert_eq!(tok.token_ids, None);
        assert_eq!(tok.token_count().map(|c| c.0), Some(4));
        // A raw prompt goes through chat when the endpoint only speaks chat.
        assert!(matches!(tok.request.prompt, PromptForm::Chat { .. }));
        assert!(!fp.features.logprobs);
    }

    #[tokio::test]
    async fn resumes_from_the_partial_log() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = ObservationLog::partial_path(&dir.path().join("fp.json"));
        let first = Fake::new(caps(5, true));
        let mut log = ObservationLog::open(&path).expect("opens");
        let fp1 = run(&set(), &first, &opts(), &mut log).await.expect("runs");
        drop(log);
        // Drop the failed ask and cut the line of `f` short, as a crash mid-write would.
        let text = std::fs::read_to_string(&path).expect("reads");
        let mut kept: Vec<String> = text
            .lines()
            .filter(|l| !l.contains("\"probe_id\":\"b\"") && !l.contains("\"probe_id\":\"f\""))
            .map(|l| format!("{l}\n"))
            .collect();
        let f_line = text
            .lines()
            .find(|l| l.contains("\"probe_id\":\"f\""))
            .expect("f was logged");
        kept.push(f_line[..f_line.len() / 2].to_string());
        std::fs::write(&path, kept.concat()).expect("writes");

        let second = Fake::new(caps(5, true));
        let mut log = ObservationLog::open(&path).expect("reopens");
        assert_eq!(log.skipped_lines(), 1);
        let fp2 = run(&set(), &second, &opts(), &mut log)
            .await
            .expect("resumes");
        // Only `b` (3 failing tries) and `f` (whose line was cut: 2 tries) were asked again.
        assert_eq!(second.calls.load(Ordering::SeqCst), 5);
        assert_eq!(fp2.observations.len(), fp1.observations.len());
        for (a, b) in fp1.observations.iter().zip(&fp2.observations) {
            assert_eq!((&a.probe_id, a.sample_index), (&b.probe_id, b.sample_index));
            assert_eq!(
                a.response.as_ref().map(|r| &r.text),
                b.response.as_ref().map(|r| &r.text)
            );
        }

        let mut other = ObservationLog::open(&path).expect("reopens");
        let mut other_set = set();
        other_set.hash = "different".into();
        let err = run(&other_set, &second, &opts(), &mut other)
            .await
            .map(|_| ());
        assert!(matches!(err, Err(FingerprintError::LogMismatch { .. })));
        other.remove().expect("removes");
        assert!(!path.exists());
    }

    /// A worker or CLI spawns runs on the runtime: the future must be `Send + 'static`
    /// once it owns its inputs.
    #[tokio::test]
    async fn run_can_be_spawned() {
        let task = tokio::spawn(async move {
            let fake = Fake::new(caps(5, true));
            let set = set();
            let mut log = ObservationLog::in_memory();
            run(&set, &fake, &opts(), &mut log)
                .await
                .map(|fp| fp.observations.len())
        });
        let asks = task.await.expect("task joins").expect("run succeeds");
        assert_eq!(asks, 7);
    }

    #[test]
    fn plan_orders_asks() {
        let s = set();
        let jobs = plan(&s);
        assert_eq!(jobs.len(), 7);
        assert_eq!(jobs[4].probe.id, "s");
        assert_eq!(jobs[4].sample_index, 2);
        assert_eq!(s.probes[1].form, ProbeForm::Raw);
    }
}
