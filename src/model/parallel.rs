//! The thread pool the plain-Rust forward pass (`decode.rs`, `qlinear.rs`) splits on.
//!
//! Why rayon rather than candle's barrier pool: the barrier pool's caller spin-waits for
//! every worker, so on a busy machine (a service's other threads, tests side by side) a
//! descheduled worker stalls every product it was handed. Measured with a test run beside
//! it, SmolLM2's decode fell from about 50 to 5-13 tok/s once decode-sized products were
//! split. With rayon, a half that no idle thread has taken is run by the thread that split
//! it, so a busy machine costs parallelism, not progress.

use std::sync::OnceLock;

use rayon::prelude::*;

/// Below this many multiply-adds a product runs on the calling thread. Inside the forward
/// pass (`parallel::install`) a split is a cheap join, so even a decode step's products
/// pay. Measured on 2 cores (decode tok/s), 64 Ki beat 4 Mi and 0 (every product split).
pub const PARALLEL_MIN_MACS: usize = 64 << 10;

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

/// Calls `f(index, chunk)` for every `chunk_len`-long chunk of `data`, split across the
/// pool when `work` (multiply-adds in all) is worth it, else on the calling thread. Each
/// chunk is computed by one call alone, so the results do not depend on the split.
pub fn par_chunks_mut(
    data: &mut [f32],
    chunk_len: usize,
    work: usize,
    f: impl Fn(usize, &mut [f32]) + Sync,
) {
    if chunk_len == 0 {
        return;
    }
    if work < PARALLEL_MIN_MACS {
        data.chunks_exact_mut(chunk_len)
            .enumerate()
            .for_each(|(i, c)| f(i, c));
        return;
    }
    data.par_chunks_exact_mut(chunk_len)
        .enumerate()
        .for_each(|(i, c)| f(i, c));
}
