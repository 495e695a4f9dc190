//! The C allocator, told once at start to give big buffers back to the system.
//!
//! glibc serves a block of 128 KiB or more with a mapping of its own, but raises that
//! threshold to the size of each such block freed (up to 32 MiB). The exposition (0.3 KiB a
//! room: 15 MiB at 50 000 rooms) and its gzip are replaced after every poll, so after the first
//! render they came from the heap instead, where what a render frees stays resident beside the
//! next one. A fixed threshold of [`THRESHOLD`] keeps every such buffer a mapping of its own,
//! returned whole when the snapshot that holds it is dropped: `cargo bench --bench memory` reads
//! 0.70 KiB resident a URTC room at 50 000 rooms with every room's series, against 1.15 KiB
//! with the moving threshold.
//!
//! An operator's own threshold wins (`MALLOC_MMAP_THRESHOLD_`, or `glibc.malloc.mmap_threshold`
//! in `GLIBC_TUNABLES`): nothing is changed then.
//! Other C libraries and systems are left as they are.
#![allow(unsafe_code)]

/// Blocks of this size and above get a mapping of their own.
pub const THRESHOLD: usize = 1 << 20;

// glibc refuses a threshold above 32 MiB on 64-bit.
const _: () = assert!(THRESHOLD <= 32 << 20);

/// Fixes glibc's mmap threshold at [`THRESHOLD`], unless the operator set one
/// (`MALLOC_MMAP_THRESHOLD_`, or `glibc.malloc.mmap_threshold` in `GLIBC_TUNABLES`).
/// Call it first thing in `main`, before other threads start. Returns whether it changed it.
pub fn give_big_buffers_back() -> bool {
    let tuned =
        std::env::var("GLIBC_TUNABLES").is_ok_and(|t| t.contains("glibc.malloc.mmap_threshold"));
    if tuned || std::env::var_os("MALLOC_MMAP_THRESHOLD_").is_some() {
        return false;
    }
    set_threshold()
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn set_threshold() -> bool {
    let Ok(threshold) = libc::c_int::try_from(THRESHOLD) else {
        return false;
    };
    // SAFETY: mallopt only sets a parameter of glibc's allocator; it takes two integers, and
    // M_MMAP_THRESHOLD accepts any value up to HEAP_MAX/2 (32 MiB on 64-bit), which 1 MiB is
    // below. It returns 1 on success, 0 on error.
    unsafe { libc::mallopt(libc::M_MMAP_THRESHOLD, threshold) == 1 }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn set_threshold() -> bool {
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn glibc_accepts_the_threshold() {
        let tuned = std::env::var("GLIBC_TUNABLES").is_ok_and(|t| t.contains("mmap_threshold"));
        if !tuned && std::env::var_os("MALLOC_MMAP_THRESHOLD_").is_none() {
            assert_eq!(
                give_big_buffers_back(),
                cfg!(all(target_os = "linux", target_env = "gnu"))
            );
        }
    }
}
