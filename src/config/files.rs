//! Opening the files a configuration names (only regular files, never a
//! blocking open) and checking the directories it names (absolute, and
//! never a system directory).

use std::fs::{File, Metadata, OpenOptions};
use std::io::{self, Read};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

/// Largest configuration file read; ours are a few KiB.
pub(super) const CONFIG_FILE_MAX: u64 = 1 << 20;

/// What a file that is not a regular file is, for an error; `None` for a
/// regular file.
pub fn not_regular(t: &std::fs::FileType) -> Option<&'static str> {
    use std::os::unix::fs::FileTypeExt;
    if t.is_file() {
        None
    } else if t.is_dir() {
        Some("a directory")
    } else if t.is_fifo() {
        Some("a FIFO (named pipe)")
    } else if t.is_socket() {
        Some("a socket")
    } else if t.is_char_device() {
        Some("a character device")
    } else if t.is_block_device() {
        Some("a block device")
    } else {
        Some("a special file")
    }
}

pub(super) fn refuse_irregular(meta: &Metadata) -> io::Result<()> {
    match not_regular(&meta.file_type()) {
        None => Ok(()),
        Some(kind) => Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("it is {kind}, not a regular file: name the file itself"),
        )),
    }
}

/// Opens a file for reading that the configuration names (a token,
/// certificate, key or CA file, or the configuration file itself), refusing
/// anything but a regular file, and never blocking.
///
/// Opening a FIFO for reading waits for a writer, forever: a shipper run by
/// a timer would hang with no message. Opening a device can have effects of
/// its own (a tape rewinds, a terminal becomes ours). So the type is checked
/// on the path first (following symlinks, so certbot's links work), and
/// then the open itself uses O_NONBLOCK (a FIFO open returns at once) and
/// O_NOCTTY, and the type is checked again on the open descriptor (fstat),
/// since the path may have been swapped in between. O_NONBLOCK changes
/// nothing when reading a regular file.
pub fn open_regular_file(path: &Path) -> io::Result<(File, Metadata)> {
    refuse_irregular(&std::fs::metadata(path)?)?;
    open_nonblocking_checked(path)
}

/// The second half of `open_regular_file`, on its own for a test that swaps
/// the file after the first check.
pub(super) fn open_nonblocking_checked(path: &Path) -> io::Result<(File, Metadata)> {
    let file = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(path)?;
    let meta = file.metadata()?;
    refuse_irregular(&meta)?;
    Ok((file, meta))
}

/// Reads at most `limit` bytes, and refuses a longer file rather than
/// reading what no token, PEM or config file is.
pub fn read_at_most(file: File, limit: u64) -> io::Result<Vec<u8>> {
    let mut buf = Vec::new();
    file.take(limit + 1).read_to_end(&mut buf)?;
    if buf.len() as u64 > limit {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("it is larger than {limit} bytes, far more than such a file holds"),
        ));
    }
    Ok(buf)
}

/// `open_regular_file` and `read_at_most`.
pub fn read_regular_file(path: &Path, limit: u64) -> io::Result<Vec<u8>> {
    read_at_most(open_regular_file(path)?.0, limit)
}

/// Runs `f` on a thread and fails the test if it has not returned within
/// 10 s: for tests of opens that used to block forever.
#[cfg(test)]
pub(crate) fn within_10s<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    rx.recv_timeout(std::time::Duration::from_secs(10))
        .expect("still blocked after 10 s")
}

/// Directories that must never be a `data_dir` or `store_dir` themselves
/// (their subdirectories are fine): the root, the standard top-level
/// directories, and the shared second-level ones that hold other programs'
/// state. The shipper creates `episodes/`, `outbox/`, `shipped/` and
/// `.lock` in its data_dir and moves directories in and out; the receiver
/// creates a directory per host in its store_dir and, at every start,
/// deletes `.upload-*` files in each of them. In `/home` that is every
/// user's home; in `/tmp` anyone can plant a symlink first. Lexical only: a
/// symlink to `/` is not caught, but the slip this is for is a typo or an
/// empty variable in a template (`data_dir = "/"`, `"/var"`).
pub(super) const SYSTEM_DIRS: &[&str] = &[
    "/",
    "/bin",
    "/boot",
    "/dev",
    "/etc",
    "/home",
    "/lib",
    "/lib32",
    "/lib64",
    "/libx32",
    "/media",
    "/mnt",
    "/opt",
    "/proc",
    "/root",
    "/run",
    "/sbin",
    "/srv",
    "/sys",
    "/tmp",
    "/usr",
    "/var",
    "/usr/bin",
    "/usr/lib",
    "/usr/lib64",
    "/usr/local",
    "/usr/sbin",
    "/usr/share",
    "/var/cache",
    "/var/lib",
    "/var/log",
    "/var/mail",
    "/var/run",
    "/var/spool",
    "/var/tmp",
];

/// Kernel file systems: nothing of ours belongs anywhere under them.
pub(super) const VIRTUAL_TREES: &[&str] = &["/dev", "/proc", "/sys"];

/// Whether `dir` may be a directory of cis490's own (see `SYSTEM_DIRS`).
/// A relative path is refused: systemd starts services in `/`, so
/// `data_dir = "data"` would mean `/data`, never what the operator meant.
pub(super) fn check_own_dir(dir: &Path, example: &str) -> Result<(), String> {
    use std::path::Component;
    let shown = dir.display();
    if !dir.is_absolute() {
        return Err(format!(
            "`{shown}` is a relative path, but the service runs in / (systemd): \
             write an absolute path such as {example}"
        ));
    }
    // `Path::components` already folds `//`, `/./` and a trailing `/` or `/.`.
    let mut norm = PathBuf::from("/");
    for c in dir.components() {
        match c {
            Component::Normal(name) => norm.push(name),
            Component::ParentDir => {
                return Err(format!(
                    "`{shown}` contains `..`: write the directory itself, such as {example}"
                ))
            }
            Component::RootDir | Component::CurDir | Component::Prefix(_) => {}
        }
    }
    if let Some(tree) = VIRTUAL_TREES.iter().find(|t| norm.starts_with(t)) {
        if norm != Path::new(tree) {
            return Err(format!(
                "`{shown}` is under {tree}, a kernel file system: \
                 use a directory of cis490's own, such as {example}"
            ));
        }
    }
    if SYSTEM_DIRS.iter().any(|d| norm == Path::new(d)) {
        return Err(format!(
            "`{shown}` is the system directory {}: cis490 creates, moves and deletes \
             entries in it, so give it a directory of its own, such as {example}",
            norm.display()
        ));
    }
    Ok(())
}
