//! The one place that knows glommio: executors, tasks, timers.
//!
//! DMA files are reached through `disk.rs`; everything else in the engine
//! uses the functions here, so the runtime stays replaceable.

use std::future::Future;
use std::time::Duration;

/// Bytes of locked memory glommio may register per shard for I/O buffers.
///
/// glommio registers `io_memory` with io_uring, which counts against
/// RLIMIT_MEMLOCK; every shard of the process shares that limit. Half the
/// limit, split over the shards, leaves room for the rings themselves.
/// Without registered memory glommio falls back to ordinary allocations,
/// which is slower but works.
pub fn io_memory_per_shard_bytes(shards: usize) -> usize {
    const DEFAULT_BYTES: usize = 10 << 20;
    const MIN_BYTES: usize = 64 << 10;
    let limit = memlock_limit_bytes();
    let share = match limit {
        None => DEFAULT_BYTES,
        Some(limit) => (limit as usize / 2 / shards.max(1)).min(DEFAULT_BYTES),
    };
    share.max(MIN_BYTES) & !(4096 - 1)
}

/// The soft RLIMIT_MEMLOCK; `None` when unlimited.
pub fn memlock_limit_bytes() -> Option<u64> {
    let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit writes into the struct we own and reads nothing else.
    let rc = unsafe { libc::getrlimit(libc::RLIMIT_MEMLOCK, &mut limit) };
    if rc != 0 || limit.rlim_cur == libc::RLIM_INFINITY {
        None
    } else {
        Some(limit.rlim_cur)
    }
}

/// Turns transparent huge pages off for this process.
///
/// With THP the first touch of fresh heap memory clears a whole 2 MiB page,
/// after compacting memory to find one if need be: a stall of milliseconds
/// to tens of milliseconds on whichever thread touched it. A broker takes a
/// fresh buffer per request until its caches are warm, so the stalls land
/// in the latency tail (measured here: single seconds with a 50 ms produce
/// p99, e2e p99 4 → 11 ms at 325k msg/s). Our binaries call this first
/// thing; programs embedding the engine may want to as well.
pub fn disable_transparent_huge_pages() -> std::io::Result<()> {
    // SAFETY: PR_SET_THP_DISABLE takes plain integers and touches only this
    // process's flags.
    let rc = unsafe { libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0) };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// mimalloc's `mi_option_purge_delay` (v3 numbering; the test below checks
/// it is the option whose default is v3's 1000 ms).
#[cfg(feature = "mimalloc")]
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// Tells mimalloc (the global allocator of our binaries) to keep freed
/// memory instead of returning it to the kernel a second later.
///
/// Request and response buffers are up to a megabyte each, freed as fast
/// as they come. Returned (`MADV_DONTNEED`), each one costs a TLB shootdown
/// on every core running this process and a page fault per 4 KiB when
/// reused: measured here at 500k msg/s, 170k faults per 10 s run and an
/// end-to-end p99 of 16–57 ms, against 63k faults and 6–9 ms when kept.
/// Memory stays at its high-water mark, which the broker's bounds (request
/// memory, tail cache, fetch sizes) already cap. Call it first thing in
/// `main`, before threads start.
#[cfg(feature = "mimalloc")]
pub fn keep_freed_memory() {
    // SAFETY: sets one integer option; documented as not thread safe, so
    // callers run it before spawning threads.
    unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, -1) };
}

/// Raises this process's soft limit on open files to its hard limit and
/// returns the new soft limit.
///
/// A broker holds two descriptors per connection (the stream, and the
/// duplicate its shard waits on; see `mamba-net`'s `receive.rs`) plus three
/// per segment, and the usual soft limit of 1024 would refuse connections
/// long before `connections_per_shard_max`. Raising soft to hard needs no
/// privilege (Go programs do it at start, as do most brokers' packages).
pub fn raise_open_file_limit() -> std::io::Result<u64> {
    let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit writes one rlimit we own.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    if limit.rlim_cur < limit.rlim_max {
        limit.rlim_cur = limit.rlim_max;
        // SAFETY: setrlimit reads one rlimit we own.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &limit) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(limit.rlim_cur)
}

/// Makes a panic on any thread end the process (exit status 70) after the
/// usual report: a shard that died would otherwise leave the process up
/// with part of its partitions (or its listener) gone, hanging its callers.
/// For binaries (`mamba serve`); a library must not decide this.
pub fn exit_on_panic() {
    let report = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        report(info);
        let thread = std::thread::current();
        tracing::error!(
            thread = thread.name().unwrap_or("?"),
            "a thread panicked; stopping the process"
        );
        std::process::exit(70);
    }));
}

/// The soft limit on open files of this process.
pub fn open_file_limit() -> Option<u64> {
    let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit writes one rlimit we own.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0
        || limit.rlim_cur == libc::RLIM_INFINITY
    {
        return None;
    }
    Some(limit.rlim_cur)
}

/// Cores this process may run on.
pub fn available_cores() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// Options for one executor thread.
#[derive(Debug, Clone)]
pub struct ExecutorOptions {
    pub name: String,
    /// Pin to this core; `None` lets the kernel place it.
    pub core: Option<usize>,
    pub io_memory_bytes: usize,
}

/// Starts an executor on its own thread running `fut_gen()`.
pub fn spawn_executor<G, F, T>(
    options: ExecutorOptions,
    fut_gen: G,
) -> std::io::Result<std::thread::JoinHandle<Result<T, String>>>
where
    G: FnOnce() -> F + Send + 'static,
    F: Future<Output = T> + 'static,
    T: Send + 'static,
{
    let placement = match options.core {
        Some(core) => glommio::Placement::Fixed(core),
        None => glommio::Placement::Unbound,
    };
    let builder = glommio::LocalExecutorBuilder::new(placement)
        .name(&options.name)
        .io_memory(options.io_memory_bytes);
    // `make` runs on the new thread so the executor (and its rings) belong
    // to it; failures come back through the join handle.
    std::thread::Builder::new().name(options.name.clone()).spawn(move || {
        let executor =
            builder.make().map_err(|e| format!("starting executor {}: {e}", options.name))?;
        Ok(executor.run(fut_gen()))
    })
}

/// Runs `future` in the background on the current shard.
pub fn spawn_detached<F>(future: F)
where
    F: Future<Output = ()> + 'static,
{
    glommio::spawn_local(future).detach();
}

pub async fn sleep(duration: Duration) {
    glommio::timer::sleep(duration).await;
}

/// Time this thread's executor spent running tasks and polling for I/O
/// since the last call (glommio hands its counters over and resets them).
pub fn take_busy_time() -> Duration {
    glommio::executor().executor_stats().total_runtime()
}

/// Yields to other tasks if this one ran long enough.
pub async fn yield_if_needed() {
    glommio::yield_if_needed().await;
}

/// Wall-clock milliseconds since the Unix epoch (record timestamps use it).
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_open_file_limit_is_raised_to_the_hard_limit() {
        let raised = super::raise_open_file_limit().expect("raise");
        let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
        // SAFETY: getrlimit writes one rlimit we own.
        assert_eq!(unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) }, 0);
        assert_eq!((raised, limit.rlim_cur), (limit.rlim_max, limit.rlim_max));
    }

    #[cfg(feature = "mimalloc")]
    #[test]
    fn keep_freed_memory_sets_mimallocs_purge_delay() {
        use libmimalloc_sys::mi_option_get;
        // SAFETY: reads an integer option.
        let default = unsafe { mi_option_get(super::MI_OPTION_PURGE_DELAY) };
        if std::env::var_os("MIMALLOC_PURGE_DELAY").is_none() {
            let option = super::MI_OPTION_PURGE_DELAY;
            assert_eq!(default, 1000, "option {option} is not mimalloc's purge delay");
        }
        super::keep_freed_memory();
        // SAFETY: as above.
        assert_eq!(unsafe { mi_option_get(super::MI_OPTION_PURGE_DELAY) }, -1);
    }
}
