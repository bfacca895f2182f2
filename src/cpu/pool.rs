//! The rayon pool the CPU ops run on, safe across `fork()`.
//!
//! A forked child (a PyTorch DataLoader worker, say) inherits the parent's memory but none of
//! its threads: rayon's global pool would wait forever for workers that do not exist there. So
//! the ops run on a pool of our own that remembers the process that built it; a process that
//! finds a pool built by another one (its parent) builds a fresh pool.

use std::sync::{Arc, Mutex};

use rayon::{ThreadPool, ThreadPoolBuilder};

static POOL: Mutex<Option<(u32, Arc<ThreadPool>)>> = Mutex::new(None);

fn pool() -> Option<Arc<ThreadPool>> {
    let pid = std::process::id();
    let mut slot = POOL.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    match slot.as_ref() {
        Some((owner, pool)) if *owner == pid => Some(pool.clone()),
        _ => {
            // Threads count: RAYON_NUM_THREADS if set, else the number of cores.
            let fresh = Arc::new(
                ThreadPoolBuilder::new()
                    .thread_name(|i| format!("inv_conv-{i}"))
                    .build()
                    .ok()?,
            );
            // The parent's pool (if any) is leaked on purpose: its threads do not exist here,
            // so dropping it could block.
            if let Some(old) = slot.take() {
                std::mem::forget(old);
            }
            *slot = Some((pid, fresh.clone()));
            Some(fresh)
        }
    }
}

/// Runs `work` on the process's pool (or on the calling thread if no pool can be built).
pub fn install<R: Send>(work: impl FnOnce() -> R + Send) -> R {
    match pool() {
        Some(pool) => pool.install(work),
        None => work(),
    }
}

/// Below this many multiply-adds an op runs on the calling thread: handing it to a pool thread
/// (a wake-up, often tens of µs) costs more than the work.
pub const INLINE_WORK: usize = 1 << 17;

thread_local! {
    /// A one-thread pool whose only worker is this thread itself, so that `install` (and the
    /// parallel iterators inside it) run inline. Leaked: a pool must not be dropped by its own
    /// worker, and each thread builds at most one.
    static INLINE: Option<&'static ThreadPool> = ThreadPoolBuilder::new()
        .num_threads(1)
        .use_current_thread()
        .build()
        .ok()
        .map(|pool| &*Box::leak(Box::new(pool)));
}

/// [`install`], but on the calling thread when the op does fewer than [`INLINE_WORK`]
/// multiply-adds.
pub fn install_sized<R: Send>(work_units: usize, work: impl FnOnce() -> R + Send) -> R {
    if work_units < INLINE_WORK {
        if let Some(pool) = INLINE.with(|p| *p) {
            return pool.install(work);
        }
    }
    install(work)
}
