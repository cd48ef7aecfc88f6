//! The data dir's lock: one ringway process per `node.data_dir`, for the life of the
//! process. Two instances on one dir would interleave writes to the same Raft log and
//! corrupt it, so the second one is refused at start, told which process holds the dir.
//!
//! The lock is an advisory `flock` on [`LOCK_FILE`] (std's `File::try_lock`), released
//! by the kernel when the process exits however it exits, so a crash never leaves a
//! stale lock behind. The holder writes its pid into the file for the refusal message.

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use crate::raft::StorageError;

/// Name of the lock file inside the data dir.
pub const LOCK_FILE: &str = "ringway.lock";
/// Bytes of the lock file read for the holder's pid: a `u32` in decimal and a newline
/// fit with room to spare; anything longer is not a pid we wrote.
const MAX_PID_BYTES: u64 = 32;

/// Holds the data dir for as long as it lives.
#[derive(Debug)]
pub struct DirLock {
    _file: File,
    path: PathBuf,
}

impl DirLock {
    /// Locks `dir` (created if missing) for this process, or says who holds it.
    // `File::try_lock` is std since Rust 1.89; the toolchain in use has it.
    pub fn acquire(dir: &Path) -> Result<DirLock, StorageError> {
        fs::create_dir_all(dir).map_err(|e| io(dir, "create directory", e))?;
        let path = dir.join(LOCK_FILE);
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(|e| io(&path, "open lock file", e))?;
        match file.try_lock() {
            Ok(()) => {}
            Err(fs::TryLockError::WouldBlock) => {
                return Err(StorageError::Locked {
                    dir: dir.to_path_buf(),
                    pid: holder_pid(&mut file),
                })
            }
            Err(fs::TryLockError::Error(e)) => return Err(io(&path, "lock", e)),
        }
        let pid = format!("{}\n", std::process::id());
        file.set_len(0)
            .and_then(|()| file.write_all(pid.as_bytes()))
            .and_then(|()| file.sync_data())
            .map_err(|e| io(&path, "write pid to lock file", e))?;
        Ok(DirLock { _file: file, path })
    }

    /// The lock file.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// The pid the holder wrote, if the file holds one.
fn holder_pid(file: &mut File) -> Option<u32> {
    file.seek(SeekFrom::Start(0)).ok()?;
    let mut text = String::new();
    file.take(MAX_PID_BYTES).read_to_string(&mut text).ok()?;
    text.trim().parse().ok()
}

fn io(file: &Path, op: &str, e: std::io::Error) -> StorageError {
    StorageError::Io {
        file: file.to_path_buf(),
        op: op.to_string(),
        source: std::sync::Arc::new(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_lock_on_the_same_dir_is_refused_with_the_holders_pid() {
        let tmp = tempfile::tempdir().unwrap();
        let held = DirLock::acquire(tmp.path()).unwrap();
        match DirLock::acquire(tmp.path()) {
            Err(StorageError::Locked { dir, pid }) => {
                assert_eq!(dir, tmp.path());
                assert_eq!(pid, Some(std::process::id()));
            }
            other => panic!("expected Locked, got {other:?}"),
        }
        drop(held);
        DirLock::acquire(tmp.path()).expect("free again once the holder is gone");
    }
}
