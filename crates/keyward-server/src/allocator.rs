//! Settings for mimalloc, the allocator the `keyward` binary (and the verify benchmark)
//! runs with.
//!
//! The verify cache spreads its entries over the heap, and with a large key set each
//! warm verification misses the CPU caches a handful of times; on a virtual machine
//! every miss can also cost a TLB walk. Backing the heap with transparent huge pages
//! (2 MiB) takes most of those walks away: at 100,000 keys the warm verification takes
//! 1.01 µs with them and 1.13 µs without (BENCHMARKS.md, "In process").

/// Asks mimalloc to back its heap with huge pages (`madvise(MADV_HUGEPAGE)`; where the
/// kernel has transparent huge pages off, nothing changes). The environment keeps the
/// last word: `MIMALLOC_ALLOW_LARGE_OS_PAGES=0` turns it off.
///
/// Call it first thing in `main`, before any thread is started.
pub fn prefer_huge_pages() {
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
