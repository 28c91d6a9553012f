//! Giving back memory the agent no longer needs once it has started.
//!
//! Start-up runs code that never runs again (argument parsing, the configuration, database
//! migrations, the engine's set-up, loading and linking plugins): its pages of the executable
//! stay mapped, and counted in the agent's RSS, long after. So does heap freed by then. When
//! start-up (or a later burst of plugin loads) is over, [`trim`] returns both: freed heap
//! (`malloc_trim`) and the pages of the agent's own executable and of plugins' compiled code
//! (`MADV_PAGEOUT`); the code that keeps running faults back in. Loading a plugin runs its
//! start-up code (a Python interpreter's, for a componentize-py policy) to read its metadata:
//! those pages go too, until a group calls it. Pages another process also maps (a CLI command
//! running the same binary) are left alone by the kernel. Costs a few milliseconds, once per
//! burst.

/// Call first in `main`, before any thread starts. glibc gives each thread that allocates its
/// own heap (up to eight per core), each holding on to what its thread freed; the agent's
/// threads allocate little, and two heaps serve them all.
pub fn at_start() {
    // SAFETY: mallopt only tunes the allocator, before any other thread exists.
    #[cfg(target_env = "gnu")]
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 2);
    }
}

/// Returns freed heap and the pages of the executable and of compiled plugins to the system.
/// Best effort: on a kernel without `MADV_PAGEOUT` (before 5.4) only the heap is trimmed.
pub fn trim() {
    // SAFETY: malloc_trim only releases memory the allocator holds free.
    #[cfg(target_env = "gnu")]
    unsafe {
        libc::malloc_trim(0);
    }
    for (start, len) in code_mappings() {
        // SAFETY: advice only; MADV_PAGEOUT never changes the contents of a mapping, the pages
        // are read back from the file on the next access.
        unsafe {
            libc::madvise(start as *mut libc::c_void, len, libc::MADV_PAGEOUT);
        }
    }
}

/// The address ranges where this process's executable file and plugins' compiled code (compile
/// cache entries, `.cwasm`) are mapped.
fn code_mappings() -> Vec<(usize, usize)> {
    let (Ok(exe), Ok(maps)) =
        (std::fs::read_link("/proc/self/exe"), std::fs::read_to_string("/proc/self/maps"))
    else {
        return Vec::new();
    };
    let exe = exe.to_string_lossy();
    maps.lines()
        .filter(|line| line.ends_with(exe.as_ref()) || line.ends_with(".cwasm"))
        .filter_map(|line| {
            let (start, end) = line.split_whitespace().next()?.split_once('-')?;
            let (start, end) = (usize::from_str_radix(start, 16).ok()?, usize::from_str_radix(end, 16).ok()?);
            (end > start).then_some((start, end - start))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_test_binary_mapped_and_trimming_leaves_the_process_working() {
        let maps = code_mappings();
        assert!(!maps.is_empty(), "the running executable is mapped");
        let here = finds_the_test_binary_mapped_and_trimming_leaves_the_process_working as *const () as usize;
        assert!(maps.iter().any(|&(start, len)| (start..start + len).contains(&here)), "{maps:?}");
        trim();
        // Code paged out comes back on use: the process carries on.
        let v: Vec<u64> = (0..1000).collect();
        assert_eq!(v.iter().sum::<u64>(), 499_500);
    }
}
