//! Settings for mimalloc, the allocator the `keyward` binary (and the verify benchmarks)
//! runs with. [`configure`] applies them; the environment keeps the last word on each
//! (`MIMALLOC_*` variables).
//!
//! **Huge pages.** The verify cache spreads its entries over the heap, and with a large
//! key set each warm verification misses the CPU caches a handful of times; on a virtual
//! machine every miss can also cost a TLB walk. Backing the heap with transparent huge
//! pages (2 MiB) takes most of those walks away: at 100,000 keys the warm verification
//! takes 1.01 µs with them and 1.13 µs without (BENCHMARKS.md, "In process").
//!
//! **Freed memory is kept.** By default mimalloc returns memory that stayed free for a
//! second to the OS (`MADV_DONTNEED`). The next allocation there page-faults, and the
//! kernel zeroes the page (2 MiB of it, on huge pages) on whichever thread allocates:
//! often the worker serving a request. Keeping it took the p99 of verify over HTTP under
//! 2 ms in every one of eight alternating runs (1.41-1.79 ms, against 1.99-2.32 ms as
//! before; BENCHMARKS.md, "Freed memory kept"). The cost: a node's resident memory
//! stays at its high-water mark instead of shrinking after a spike, the usual trade of
//! a server's allocator; `MIMALLOC_PURGE_DELAY=<ms>` restores purging.

/// mimalloc's `purge_delay` option. libmimalloc-sys 0.1.49 names no constant for it; its
/// place in `mi_option_t` is checked against the default mimalloc gives it
/// (`tests::the_purge_delay_option_is_the_one_named`).
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// Applies the settings above. Call it first thing in `main`, before any thread is
/// started.
pub fn configure() {
    prefer_huge_pages();
    keep_freed_memory();
}

/// Asks mimalloc to back its heap with huge pages (`madvise(MADV_HUGEPAGE)`; where the
/// kernel has transparent huge pages off, nothing changes). The environment keeps the
/// last word: `MIMALLOC_ALLOW_LARGE_OS_PAGES=0` turns it off.
fn prefer_huge_pages() {
    // SAFETY: `mi_option_set_enabled_default` only writes mimalloc's option table, which
    // is not synchronised; calling it from `main` before any other thread exists means
    // no other thread reads or writes the table at the same time. The option constant
    // is one mimalloc defines, and the call has no other precondition.
    unsafe {
        libmimalloc_sys::mi_option_set_enabled_default(
            libmimalloc_sys::mi_option_large_os_pages,
            true,
        );
    }
}

/// Asks mimalloc never to return freed memory to the OS (`purge_delay` -1). The
/// environment keeps the last word: `MIMALLOC_PURGE_DELAY`.
fn keep_freed_memory() {
    // SAFETY: as in `prefer_huge_pages`: only mimalloc's option table is written, before
    // any other thread exists (`configure`'s contract). The option's index is checked by
    // the test below; an index out of range is ignored by mimalloc, not undefined.
    unsafe {
        libmimalloc_sys::mi_option_set_default(MI_OPTION_PURGE_DELAY, -1);
    }
}

#[cfg(test)]
mod tests {
    use super::MI_OPTION_PURGE_DELAY;

    /// The index names `purge_delay`: mimalloc v3 gives that option a default of 1,000 ms
    /// and no other option of `mi_option_t` that default.
    #[test]
    fn the_purge_delay_option_is_the_one_named() {
        if std::env::var_os("MIMALLOC_PURGE_DELAY").is_some() {
            return; // the environment set it; nothing to compare with
        }
        // SAFETY: reads mimalloc's option table; it may initialise the option from the
        // environment, which mimalloc does under its own rules for concurrent readers.
        let value = unsafe { libmimalloc_sys::mi_option_get(MI_OPTION_PURGE_DELAY) };
        assert_eq!(value, 1_000);
    }
}
