//! Opening the files the library is handed (config, weights, model.onnx and its external data,
//! cache refs, images) so that no path can hang or exhaust the host: the type is checked after
//! resolving links, the open itself cannot block on a FIFO or device, and whole-file reads are
//! capped at what the format needs.

use std::fs::{File, Metadata};
use std::io::Read;
use std::path::Path;

use crate::error::{Error, Result};

/// What a path that is not a regular file is, for messages.
fn kind_name(meta: &Metadata) -> &'static str {
    let t = meta.file_type();
    #[cfg(unix)]
    {
        use std::os::unix::fs::FileTypeExt;
        if t.is_fifo() {
            return "a FIFO (named pipe)";
        }
        if t.is_socket() {
            return "a socket";
        }
        if t.is_char_device() {
            return "a character device";
        }
        if t.is_block_device() {
            return "a block device";
        }
    }
    if t.is_dir() {
        "a folder"
    } else {
        "not a regular file"
    }
}

fn not_regular(what: &str, path: &Path, meta: &Metadata, bad: fn(String) -> Error) -> Error {
    bad(format!(
        "{} is {}, not a regular file ({what}); only regular files are read, a pipe or device could block or never end",
        path.display(),
        kind_name(meta)
    ))
}

/// The metadata of the file `path` resolves to, refusing anything but a regular file with
/// `bad`. For files another library opens by path (ONNX Runtime's model.onnx and external data).
pub fn check_regular(path: &Path, what: &str, bad: fn(String) -> Error) -> Result<Metadata> {
    let meta = std::fs::metadata(path).map_err(|e| Error::from_io(&e, what, path))?;
    if !meta.is_file() {
        return Err(not_regular(what, path, &meta, bad));
    }
    Ok(meta)
}

/// Opens a regular file for reading. The type is checked after following links, and again on
/// the open descriptor (the path could be swapped in between); the open is non-blocking, so a
/// FIFO swapped in at the last moment cannot hang it either.
pub fn open_regular(path: &Path, what: &str, bad: fn(String) -> Error) -> Result<(File, u64)> {
    check_regular(path, what, bad)?;
    let mut opts = std::fs::OpenOptions::new();
    opts.read(true);
    open_with(&mut opts, path, what, bad)
}

/// Opens `path` with `opts` (a writable cache file: a lock, a download in progress) the same
/// way: non-blocking, and refused unless the descriptor is a regular file. A missing file is
/// created if `opts` says so.
pub fn open_with(
    opts: &mut std::fs::OpenOptions,
    path: &Path,
    what: &str,
    bad: fn(String) -> Error,
) -> Result<(File, u64)> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY);
    }
    let file = opts
        .open(path)
        .map_err(|e| Error::from_io(&e, what, path))?;
    let meta = file
        .metadata()
        .map_err(|e| Error::from_io(&e, what, path))?;
    if !meta.is_file() {
        return Err(not_regular(what, path, &meta, bad));
    }
    #[cfg(unix)]
    clear_nonblock(&file);
    Ok((file, meta.len()))
}

/// Linux ignores O_NONBLOCK on regular files, but other systems and file systems need not:
/// reads of a regular file should simply wait for the data.
#[cfg(unix)]
fn clear_nonblock(file: &File) {
    use std::os::fd::AsRawFd;
    let fd = file.as_raw_fd();
    // SAFETY: fcntl on a descriptor we own; failure leaves the flag set, which is harmless.
    unsafe {
        let flags = libc::fcntl(fd, libc::F_GETFL);
        if flags >= 0 {
            libc::fcntl(fd, libc::F_SETFL, flags & !libc::O_NONBLOCK);
        }
    }
}

/// Reads a whole regular file of at most `max` bytes; a larger one is refused with `bad` and
/// a message naming the limit, before anything is allocated for it. A file that grows while
/// it is read is cut off at `max + 1` bytes and refused the same way.
pub fn read_capped(path: &Path, what: &str, max: u64, bad: fn(String) -> Error) -> Result<Vec<u8>> {
    let (file, len) = open_regular(path, what, bad)?;
    let too_big = |len: u64| {
        bad(format!(
            "{what} {} is {len} bytes, over the limit of {max} bytes",
            path.display()
        ))
    };
    if len > max {
        return Err(too_big(len));
    }
    let mut buf = Vec::with_capacity(len as usize);
    file.take(max + 1)
        .read_to_end(&mut buf)
        .map_err(|e| Error::from_io(&e, what, path))?;
    if buf.len() as u64 > max {
        return Err(too_big(buf.len() as u64));
    }
    Ok(buf)
}

#[cfg(all(test, unix))]
mod tests {
    use super::*;
    use crate::error::TimmStatus;

    fn fifo(dir: &Path, name: &str) -> std::path::PathBuf {
        let p = dir.join(name);
        let c = std::ffi::CString::new(p.to_str().unwrap()).unwrap();
        // SAFETY: a valid NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        p
    }

    #[test]
    fn a_fifo_behind_a_link_is_refused_without_blocking() {
        let dir = tempfile::tempdir().unwrap();
        let f = fifo(dir.path(), "pipe");
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(&f, &link).unwrap();
        for p in [&f, &link] {
            let e = open_regular(p, "weights", Error::invalid_model).unwrap_err();
            assert_eq!(e.status(), TimmStatus::TIMM_ERR_INVALID_MODEL);
            assert!(e.message().contains("a FIFO (named pipe)"), "{e}");
        }
    }

    #[test]
    fn devices_and_folders_are_refused() {
        let e = read_capped(Path::new("/dev/zero"), "ref", 64, Error::invalid_model).unwrap_err();
        assert!(e.message().contains("a character device"), "{e}");
        let e = read_capped(Path::new("/"), "ref", 64, Error::invalid_model).unwrap_err();
        assert!(e.message().contains("a folder"), "{e}");
    }

    #[test]
    fn reads_are_capped_with_the_limit_in_the_message() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f");
        std::fs::write(&p, [7u8; 100]).unwrap();
        assert_eq!(read_capped(&p, "f", 100, Error::io).unwrap().len(), 100);
        let e = read_capped(&p, "f", 99, Error::invalid_argument).unwrap_err();
        assert_eq!(e.status(), TimmStatus::TIMM_ERR_INVALID_ARGUMENT);
        assert!(e.message().contains("over the limit of 99 bytes"), "{e}");
    }
}
