//! The per-blob lock huggingface_hub takes, so our downloads and Python's never write one blob
//! at the same time.
//!
//! Python's `filelock.UnixFileLock` opens `<cache>/.locks/models--org--name/<etag>.lock`
//! (created with mode 0o664 by huggingface_hub so a shared cache works across users), polls
//! `flock(fd, LOCK_EX | LOCK_NB)`, and never deletes the file: every waiter must lock the same
//! inode. We do the same.

use std::fs::{File, OpenOptions};
use std::path::Path;
use std::time::{Duration, Instant};

use crate::error::{Error, Result};

/// How often a waiter retries; filelock polls at 0.05 s too.
const POLL: Duration = Duration::from_millis(50);

/// An exclusive lock held until dropped (closing the descriptor releases the flock).
#[derive(Debug)]
pub struct BlobLock {
    _file: File,
}

impl BlobLock {
    /// Blocks until the lock is ours or `timeout` passes.
    pub fn acquire(path: &Path, timeout: Duration) -> Result<BlobLock> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)
                .map_err(|e| Error::from_io(&e, "cannot create the lock folder", dir))?;
        }
        let start = Instant::now();
        loop {
            let file = open_lock_file(path)?;
            if try_lock(&file).map_err(|e| Error::from_io(&e, "cannot lock", path))? {
                // A peer that cleaned up the lock file (not filelock, but a user's `rm -rf .locks`)
                // leaves us holding an unlinked inode nobody else can see: reopen the path.
                if still_linked(&file, path) {
                    return Ok(BlobLock { _file: file });
                }
                continue;
            }
            if start.elapsed() >= timeout {
                return Err(Error::io(format!(
                    "timed out after {}s waiting for the download lock {} held by another process; \
                     if no download is running, delete that file",
                    timeout.as_secs(),
                    path.display()
                )));
            }
            std::thread::sleep(POLL);
        }
    }
}

fn open_lock_file(path: &Path) -> Result<File> {
    let mut opts = OpenOptions::new();
    opts.read(true).write(true).create(true).truncate(false);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o664);
    }
    crate::files::open_with(&mut opts, path, "cannot open the lock file", Error::io).map(|(f, _)| f)
}

/// `Ok(false)` when another holder has it.
#[cfg(unix)]
fn try_lock(file: &File) -> std::io::Result<bool> {
    use std::os::unix::io::AsRawFd;
    // SAFETY: flock on a descriptor we own; no memory is passed.
    let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    if rc == 0 {
        return Ok(true);
    }
    let err = std::io::Error::last_os_error();
    match err.raw_os_error() {
        // Some filesystems report EACCES for contention, as filelock notes.
        Some(libc::EWOULDBLOCK) | Some(libc::EACCES) => Ok(false),
        Some(libc::EINTR) => Ok(false),
        _ => Err(err),
    }
}

#[cfg(not(unix))]
fn try_lock(file: &File) -> std::io::Result<bool> {
    match file.try_lock() {
        Ok(()) => Ok(true),
        Err(std::fs::TryLockError::WouldBlock) => Ok(false),
        Err(std::fs::TryLockError::Error(e)) => Err(e),
    }
}

#[cfg(unix)]
fn still_linked(file: &File, path: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    match (file.metadata(), std::fs::metadata(path)) {
        (Ok(held), Ok(now)) => {
            held.nlink() > 0 && held.ino() == now.ino() && held.dev() == now.dev()
        }
        _ => false,
    }
}

#[cfg(not(unix))]
fn still_linked(_file: &File, path: &Path) -> bool {
    path.exists()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;

    #[test]
    fn second_holder_waits_for_the_first() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(".locks/models--a--b/abc.lock");
        let first = BlobLock::acquire(&path, Duration::from_secs(5)).unwrap();
        let released = Arc::new(AtomicBool::new(false));
        let (p, r) = (path.clone(), released.clone());
        let waiter = std::thread::spawn(move || {
            let _second = BlobLock::acquire(&p, Duration::from_secs(10)).unwrap();
            // The first holder must have released before we got here.
            r.load(Ordering::SeqCst)
        });
        std::thread::sleep(Duration::from_millis(300));
        released.store(true, Ordering::SeqCst);
        drop(first);
        assert!(
            waiter.join().unwrap(),
            "second lock was granted while the first was held"
        );
        assert!(path.exists(), "the lock file must stay for other waiters");
    }

    #[test]
    fn times_out_with_a_message_naming_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.lock");
        let _held = BlobLock::acquire(&path, Duration::from_secs(1)).unwrap();
        let e = BlobLock::acquire(&path, Duration::from_millis(200)).unwrap_err();
        assert!(e.message().contains("x.lock"), "{e}");
    }
}
