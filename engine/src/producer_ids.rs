//! Producer ids, unique for the life of a data directory.
//!
//! Ids are handed out from blocks; the end of the current block is stored
//! durably (`<data-dir>/producer-ids`) before any id of it is given out, so
//! a restart skips to a fresh block and never repeats an id.

use crate::error::{EngineError, EngineResult};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

const FILE: &str = "producer-ids";
const BLOCK: u64 = 1000;

pub struct ProducerIds {
    path: PathBuf,
    /// (next id, end of the reserved block)
    range: Mutex<(u64, u64)>,
}

fn error(path: &Path, reason: impl std::fmt::Display) -> EngineError {
    EngineError::DataDir { path: path.display().to_string(), reason: reason.to_string() }
}

impl ProducerIds {
    pub fn new(data_dir: &Path) -> ProducerIds {
        ProducerIds { path: data_dir.join(FILE), range: Mutex::new((0, 0)) }
    }

    /// The end of the last block this data directory reserved: every id
    /// it ever handed out is below it (0 when it handed out none).
    pub fn reserved_end(&self) -> EngineResult<u64> {
        match std::fs::read_to_string(&self.path) {
            Ok(text) => text
                .trim()
                .parse::<u64>()
                .map_err(|e| error(&self.path, format!("unreadable: {e}"))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(0),
            Err(e) => Err(error(&self.path, e)),
        }
    }

    pub fn allocate(&self) -> EngineResult<u64> {
        let mut range = self.range.lock().unwrap_or_else(|p| p.into_inner());
        if range.0 == range.1 {
            let start = self.reserved_end()?;
            let end = start
                .checked_add(BLOCK)
                .ok_or_else(|| error(&self.path, "producer ids exhausted"))?;
            let tmp = self.path.with_extension("tmp");
            let mut file = std::fs::File::create(&tmp).map_err(|e| error(&tmp, e))?;
            file.write_all(format!("{end}\n").as_bytes()).map_err(|e| error(&tmp, e))?;
            file.sync_all().map_err(|e| error(&tmp, e))?;
            std::fs::rename(&tmp, &self.path).map_err(|e| error(&self.path, e))?;
            if let Some(dir) = self.path.parent() {
                std::fs::File::open(dir).and_then(|d| d.sync_all()).map_err(|e| error(dir, e))?;
            }
            *range = (start, end);
        }
        let id = range.0;
        range.0 += 1;
        Ok(id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_never_repeat_across_restarts() {
        let dir = tempfile::tempdir().expect("tempdir");
        let first = ProducerIds::new(dir.path());
        let a: Vec<u64> = (0..3).map(|_| first.allocate().expect("id")).collect();
        let second = ProducerIds::new(dir.path());
        let b = second.allocate().expect("id");
        assert_eq!(a, vec![0, 1, 2]);
        assert!(b >= BLOCK, "a restart starts a fresh block");
    }
}
