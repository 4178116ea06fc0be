//! The calling thread's CPU set (`sched_getaffinity` / `sched_setaffinity`), for keeping the
//! control plane's threads off the cores the workers are pinned to. (`core_affinity` sets one
//! core at a time; this needs a set.)

use std::io;

/// The cores the calling thread may run on.
pub(crate) fn allowed() -> io::Result<Vec<usize>> {
    // SAFETY: an all-zero `cpu_set_t` is a valid empty set.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: `set` is a writable `cpu_set_t` of the size passed; pid 0 is the calling thread.
    let r = unsafe { libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) };
    if r != 0 {
        return Err(io::Error::last_os_error());
    }
    let mut cores = Vec::new();
    for c in 0..libc::CPU_SETSIZE as usize {
        // SAFETY: reads one bit of an initialised set, at an index below CPU_SETSIZE.
        if unsafe { libc::CPU_ISSET(c, &set) } {
            cores.push(c);
        }
    }
    Ok(cores)
}

/// Restricts the calling thread to the cores it may use now minus `taken`. Returns the cores
/// it keeps; when none would be left, changes nothing and returns an empty list.
pub(crate) fn move_off(taken: &[usize]) -> io::Result<Vec<usize>> {
    let keep: Vec<usize> = allowed()?
        .into_iter()
        .filter(|c| !taken.contains(c))
        .collect();
    if keep.is_empty() {
        return Ok(keep);
    }
    // SAFETY: an all-zero `cpu_set_t` is a valid empty set.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    for &c in &keep {
        // SAFETY: `c` came from `allowed`, so it is below CPU_SETSIZE.
        unsafe { libc::CPU_SET(c, &mut set) };
    }
    // SAFETY: `set` is an initialised `cpu_set_t` of the size passed; pid 0 is this thread.
    let r = unsafe { libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) };
    if r != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(keep)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_thread_moves_off_the_cores_named_and_never_onto_none() {
        std::thread::spawn(|| {
            let all = allowed().expect("affinity");
            assert!(!all.is_empty());
            // every core taken: nothing changes
            assert!(move_off(&all).expect("no-op").is_empty());
            assert_eq!(allowed().expect("affinity"), all);
            if all.len() > 1 {
                let keep = move_off(&all[..1]).expect("moved");
                assert_eq!(keep, all[1..]);
                assert_eq!(allowed().expect("affinity"), all[1..]);
            }
        })
        .join()
        .expect("test thread");
    }
}
