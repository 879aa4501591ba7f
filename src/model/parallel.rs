//! The thread pool the plain-Rust forward pass (`decode.rs`, `qlinear.rs`) splits on.
//!
//! Why rayon rather than candle's barrier pool: the barrier pool's caller spin-waits for
//! every worker, so on a busy machine (a service's other threads, tests side by side) a
//! descheduled worker stalls every product it was handed. Measured with a test run beside
//! it, SmolLM2's decode fell from about 50 to 5-13 tok/s once decode-sized products were
//! split. With rayon, a half that no idle thread has taken is run by the thread that split
//! it, so a busy machine costs parallelism, not progress.

use std::sync::OnceLock;

fn pool() -> Option<&'static rayon::ThreadPool> {
    static POOL: OnceLock<Option<rayon::ThreadPool>> = OnceLock::new();
    POOL.get_or_init(|| {
        rayon::ThreadPoolBuilder::new()
            .num_threads(candle_core::utils::get_num_threads())
            .thread_name(|i| format!("forward-{i}"))
            .build()
            .map_err(|e| tracing::warn!("no forward-pass thread pool, running on one core: {e}"))
            .ok()
    })
    .as_ref()
}

/// Runs `f` on a pool thread, where each split inside it is a cheap join instead of a
/// blocking hand-off from outside the pool. Without a pool, `f` runs here.
pub fn install<R: Send>(f: impl FnOnce() -> R + Send) -> R {
    match pool() {
        Some(p) => p.install(f),
        None => f(),
    }
}
