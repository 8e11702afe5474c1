//! How full the data directory's filesystem is (statvfs), for operators:
//! `mamba broker info` shows it, so a disk filling up is seen before
//! appends fail with `disk full`.

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

/// A filesystem's size and the room left in it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DiskSpace {
    pub total_bytes: u64,
    /// What an unprivileged process (the broker) may still write: the free
    /// blocks less the ones reserved for root (`f_bavail`), as `df` shows
    /// under "Avail".
    pub free_bytes: u64,
}

/// The space of the filesystem holding `path`.
pub fn of(path: &Path) -> std::io::Result<DiskSpace> {
    let c_path = CString::new(path.as_os_str().as_bytes())
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
    // SAFETY: statvfs writes only into the zeroed struct we pass, and reads
    // the NUL-terminated path, which lives until the call returns.
    let mut stat: libc::statvfs = unsafe { std::mem::zeroed() };
    let rc = unsafe { libc::statvfs(c_path.as_ptr(), &mut stat) };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    // Block counts are in units of the fragment size (statvfs(3)); all
    // three are 64-bit on the 64-bit Linux targets we build for.
    Ok(DiskSpace {
        total_bytes: stat.f_blocks.saturating_mul(stat.f_frsize),
        free_bytes: stat.f_bavail.saturating_mul(stat.f_frsize),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_directory_has_a_filesystem_with_room_and_a_missing_one_is_an_error() {
        let dir = tempfile::tempdir().expect("tempdir");
        let space = of(dir.path()).expect("statvfs");
        assert!(space.total_bytes > 0, "{space:?}");
        assert!(space.free_bytes <= space.total_bytes, "{space:?}");
        let missing = of(&dir.path().join("no-such-dir")).expect_err("missing");
        assert_eq!(missing.kind(), std::io::ErrorKind::NotFound);
    }
}
