//! Packing: one episode directory streamed to `tar → zstd → sha256 → out`
//! in a single pass, never reading the output back (`out` is the outbox
//! file, or that file and the body of an upload: `prepare`'s business).
//!
//! ```text
//!  episode dir ──tree::walk (sorted, by descriptor)──▶ tar::Builder ─▶ CountingWriter (raw bytes)
//!      ─▶ zstd::Encoder (checksum, optional workers) ─▶ HashingWriter (sha256) ─▶ out
//! ```
//!
//! This module owns the archive format: which entries go in (regular files,
//! directories and symlinks, all under `<episode_id>/`), in what order (byte
//! order of names, depth first) and with what metadata (mode and mtime; owners
//! zeroed), so that the same tree always yields the same bytes and digest. It
//! also owns the check that no file changed while it was read: its size
//! against the tar header (`ExactReader`), and its `fstat` (size, mtime,
//! ctime) before and after reading, so a rewrite in place of the same size
//! is caught too. The walk itself (order, descriptors, fingerprint) is
//! `tree`'s.
//!
//! It does not own the output file: the caller creates
//! `outbox/<id>.tar.zst.partial`, passes it in, and after `pack_episode`
//! returns does `sync_all` and the rename. It does not decide *when* an
//! episode is finished (the done marker) nor retry anything.

use std::ffi::OsString;
use std::fmt;
use std::io::{self, Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use tar::{EntryType, Header};

use crate::dirfd::{self, Kind, Stat};
use crate::fsutil;
use crate::hashing::{CountingWriter, HashingWriter};
use crate::shipper::tree::{self, Entry, Fingerprint, WalkError};

/// How often (in raw tar bytes) the progress callback is called at most,
/// after a first call as soon as anything is written.
const PROGRESS_EVERY: u64 = 1024 * 1024;

/// How to compress.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PackOptions {
    /// zstd level (1..=22; 3 is zstd's own default). Levels out of range are
    /// clamped by zstd.
    pub level: i32,
    /// zstd worker threads; 0 compresses on the calling thread. 0 and ≥1
    /// give different (equally valid) frames; 1 and 2 gave identical bytes in
    /// our tests. Keep it fixed if identical tarballs across runs matter.
    pub threads: u32,
}

/// What a successful pack produced.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Packed {
    /// Length of the uncompressed tar stream (headers, data, padding, trailer).
    pub raw_bytes: u64,
    /// Length of the compressed output, i.e. of the file written.
    pub compressed_bytes: u64,
    /// SHA-256 of the compressed output, exactly the bytes in the file.
    pub sha256: [u8; 32],
    /// Entries left out, one sentence each (fifos, sockets, devices).
    pub warnings: Vec<String>,
    /// What the walk saw: kept beside the tarball, so the tarball is reused
    /// (and the episode retired) only while the episode is still this tree.
    pub tree: Fingerprint,
}

/// How a file differed from the size recorded in its tar header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Change {
    /// End of file came before the recorded size.
    Shrank {
        /// Bytes read before the end of file.
        read: u64,
    },
    /// More bytes were there after the recorded size.
    Grew,
    /// The path named another file (or a non-file) by the time it was opened.
    Replaced,
    /// Same size, but its mtime or ctime moved while it was read: written
    /// in place (the archive would hold a mix of old and new bytes).
    Rewritten,
}

/// The step of writing the output that failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WritePhase {
    /// Creating and configuring the zstd encoder.
    Setup,
    /// Writing entries (headers and file data).
    Entries,
    /// Writing the tar end-of-archive blocks.
    TarTrailer,
    /// Ending the zstd frame (last block and checksum).
    ZstdFrame,
    /// Flushing the output file.
    Flush,
}

/// Why an episode could not be packed. Every variant means the output file is
/// incomplete and must be discarded.
#[derive(Debug)]
pub enum PackError {
    /// The episode id is not a single plain path component (empty, `.`, `..`,
    /// or containing `/` or NUL), so it cannot be the archive's top directory.
    BadEpisodeId {
        /// The id as given.
        id: String,
    },
    /// The episode path is not a directory. A symlink to a directory counts as
    /// not a directory: links are never followed.
    NotADirectory {
        /// The episode directory as given.
        path: PathBuf,
    },
    /// Listing a directory, or stat-ing, opening or reading an entry failed.
    Read {
        /// The file or directory that could not be read.
        path: PathBuf,
        /// The error from the operating system.
        source: io::Error,
    },
    /// A file changed while it was being packed: the episode is probably still
    /// being written.
    Changed {
        /// The file that changed.
        path: PathBuf,
        /// Its size when the tar header was written.
        size: u64,
        /// How it changed.
        change: Change,
    },
    /// Writing the output failed (disk full, I/O error, compressor error).
    Write {
        /// What was being written.
        phase: WritePhase,
        /// The error from the file, or from zstd (as `io::Error`).
        source: io::Error,
    },
}

impl PackError {
    /// True if the output ran out of space, quota or file size (ENOSPC,
    /// EDQUOT, EFBIG, as `fsutil::is_no_space` decides): worth
    /// telling apart because the fix is freeing space, not retrying now.
    pub fn is_no_space(&self) -> bool {
        match self {
            PackError::Write { source, .. } => fsutil::is_no_space(source),
            _ => false,
        }
    }
}

impl fmt::Display for PackError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const RETRY: &str = "the episode is still being written? it will be retried next pass";
        match self {
            PackError::BadEpisodeId { id } => write!(
                f,
                "episode id {id:?} cannot name a directory in a tarball \
                 (it must be one path component, not `.` or `..`)"
            ),
            PackError::NotADirectory { path } => write!(
                f,
                "{} is not a directory (symlinks are not followed)",
                path.display()
            ),
            PackError::Read { path, source } => {
                write!(f, "reading {}: {source}", path.display())
            }
            PackError::Changed { path, size, change } => match change {
                Change::Shrank { read } => write!(
                    f,
                    "{} changed size while being packed (was {size} bytes, \
                     ended after {read}): {RETRY}",
                    path.display()
                ),
                Change::Grew => write!(
                    f,
                    "{} changed size while being packed (was {size} bytes, \
                     then grew): {RETRY}",
                    path.display()
                ),
                Change::Replaced => write!(
                    f,
                    "{} was replaced while being packed: {RETRY}",
                    path.display()
                ),
                Change::Rewritten => write!(
                    f,
                    "{} was modified while being packed (same size, new mtime/ctime): {RETRY}",
                    path.display()
                ),
            },
            PackError::Write { phase, source } => {
                let what = match phase {
                    WritePhase::Setup => "setting up the zstd encoder",
                    WritePhase::Entries => "writing the tarball",
                    WritePhase::TarTrailer => "writing the tarball (end-of-archive blocks)",
                    WritePhase::ZstdFrame => "writing the tarball (end of the zstd frame)",
                    WritePhase::Flush => "writing the tarball (flush)",
                };
                write!(f, "{what}: {source}")
            }
        }
    }
}

impl std::error::Error for PackError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            PackError::Read { source, .. } | PackError::Write { source, .. } => Some(source),
            _ => None,
        }
    }
}

type Output<W> =
    tar::Builder<CountingWriter<zstd::stream::write::Encoder<'static, HashingWriter<W>>>>;

/// Streams `episode_dir` into `out` as a zstd-compressed tar with every entry
/// under `<episode_id>/`, and returns `out` with what was written.
///
/// Everything is finished explicitly (tar trailer, zstd frame, flush) and each
/// step's error is returned; the caller still has to `sync_all` and rename.
/// `progress` gets the cumulative raw tar bytes, about every MiB and once at
/// the end. On error the output is incomplete: delete it.
pub fn pack_episode<W: Write>(
    episode_dir: &Path,
    episode_id: &str,
    out: W,
    opts: &PackOptions,
    progress: &mut dyn FnMut(u64),
) -> Result<(W, Packed), PackError> {
    if !is_plain_component(episode_id) {
        return Err(PackError::BadEpisodeId {
            id: episode_id.to_string(),
        });
    }
    let setup = |source| PackError::Write {
        phase: WritePhase::Setup,
        source,
    };
    let mut encoder =
        zstd::stream::write::Encoder::new(HashingWriter::new(out), opts.level).map_err(setup)?;
    // The frame checksum lets `zstd -t` (and the receiver) detect corruption
    // of the decompressed stream independently of our sha256 of the file.
    encoder.include_checksum(true).map_err(setup)?;
    if opts.threads > 0 {
        encoder.multithread(opts.threads).map_err(setup)?;
    }

    let mut packer = Packer {
        builder: tar::Builder::new(CountingWriter::new(encoder)),
        buf: vec![0u8; crate::IO_CHUNK],
        warnings: Vec::new(),
        progress,
        // Report as soon as the first header is written, then every MiB: even
        // a small episode gets a report while the output is still incomplete.
        next_report: 1,
    };
    let tree = tree::walk(episode_dir, episode_id, &mut |e| packer.append(e))?;

    // Finish each layer by hand: `Drop` would swallow errors, and a zstd
    // frame that is never ended is a truncated file.
    let Packer {
        builder,
        warnings,
        progress,
        ..
    } = packer;
    let counting = builder.into_inner().map_err(|source| PackError::Write {
        phase: WritePhase::TarTrailer,
        source,
    })?;
    let (encoder, raw_bytes) = counting.into_inner();
    let mut hashing = encoder.finish().map_err(|source| PackError::Write {
        phase: WritePhase::ZstdFrame,
        source,
    })?;
    hashing.flush().map_err(|source| PackError::Write {
        phase: WritePhase::Flush,
        source,
    })?;
    let (file, sha256, compressed_bytes) = hashing.finish();
    progress(raw_bytes);
    Ok((
        file,
        Packed {
            raw_bytes,
            compressed_bytes,
            sha256,
            warnings,
            tree,
        },
    ))
}

impl From<WalkError> for PackError {
    fn from(e: WalkError) -> PackError {
        match e {
            WalkError::NotADirectory(path) => PackError::NotADirectory { path },
            WalkError::Read { path, source } => PackError::Read { path, source },
            WalkError::Replaced(path) => PackError::Changed {
                path,
                size: 0,
                change: Change::Replaced,
            },
        }
    }
}

/// True if `id` can be the top directory of the archive as is.
fn is_plain_component(id: &str) -> bool {
    !id.is_empty() && id != "." && id != ".." && !id.contains(['/', '\0'])
}

struct Packer<'p, W: Write> {
    builder: Output<W>,
    buf: Vec<u8>,
    warnings: Vec<String>,
    progress: &'p mut dyn FnMut(u64),
    next_report: u64,
}

impl<W: Write> Packer<'_, W> {
    /// Appends one entry the walk reached (directories are opened and
    /// descended into by the walk itself).
    fn append(&mut self, e: &Entry<'_>) -> Result<(), PackError> {
        let kind = match e.stat.kind() {
            Kind::Dir => return self.append_dir(e.name, &e.stat),
            Kind::File => return self.append_file(e),
            Kind::Symlink => return self.append_symlink(e),
            Kind::Fifo => "a fifo",
            Kind::Socket => "a socket",
            Kind::BlockDevice => "a block device",
            Kind::CharDevice => "a character device",
            Kind::Unknown => "of an unknown type",
        };
        self.warnings.push(format!(
            "skipped {}: it is {kind} (only files, directories and symlinks are packed)",
            e.path.display()
        ));
        Ok(())
    }

    fn append_dir(&mut self, name: &Path, st: &Stat) -> Result<(), PackError> {
        // A trailing slash, as GNU tar writes directory names.
        let mut with_slash = OsString::from(name.as_os_str());
        with_slash.push("/");
        let mut header = header_for(st, EntryType::Directory, 0);
        self.builder
            .append_data(&mut header, Path::new(&with_slash), io::empty())
            .map_err(write_err)?;
        self.report();
        Ok(())
    }

    fn append_symlink(&mut self, e: &Entry<'_>) -> Result<(), PackError> {
        let (parent, leaf) = e.parent.expect("the top is a directory");
        // readlinkat reads the link itself: a link is stored, never followed.
        let target = parent.read_link(leaf).map_err(|source| PackError::Read {
            path: e.path.to_path_buf(),
            source,
        })?;
        let mut header = header_for(&e.stat, EntryType::Symlink, 0);
        // Store the target byte for byte when it fits: `set_link_name` and
        // `append_link` would normalise it (`a/./b` → `a/b`). A target too long
        // for the header goes through `append_link`, whose GNU long-link entry
        // is literal too.
        if header.set_link_name_literal(target.as_bytes()).is_ok() {
            self.builder
                .append_data(&mut header, e.name, io::empty())
                .map_err(write_err)?;
        } else {
            self.builder
                .append_link(&mut header, e.name, &target)
                .map_err(write_err)?;
        }
        self.report();
        Ok(())
    }

    fn append_file(&mut self, e: &Entry<'_>) -> Result<(), PackError> {
        let src = e.path;
        let (parent, leaf) = e.parent.expect("the top is a directory");
        let read_err = |source| PackError::Read {
            path: src.to_path_buf(),
            source,
        };
        let changed = |change| PackError::Changed {
            path: src.to_path_buf(),
            size: e.stat.size,
            change,
        };
        // Opened relative to its parent's descriptor with O_NOFOLLOW (see
        // `dirfd`): a symlink swapped in at any depth fails the open instead
        // of being followed.
        let file = parent
            .open_file(leaf)
            .map_err(|err| match err.raw_os_error() {
                Some(libc::ELOOP) => changed(Change::Replaced),
                _ => read_err(err),
            })?;
        // The header promises what this fstat says; the walk's fstatat must
        // describe the same version, or the file is being changed under us.
        let before = Stat::of(&file).map_err(read_err)?;
        if before.kind() != Kind::File || !before.same_inode(&e.stat) {
            return Err(changed(Change::Replaced));
        }
        if !before.same_version(&e.stat) {
            return Err(changed(Change::Rewritten));
        }
        let size = before.size;
        // Read once, front to back: a longer readahead on a cold disk.
        dirfd::advise(&file, dirfd::Advice::Sequential);
        let mut header = header_for(&before, EntryType::Regular, size);
        // Only the header (and any GNU long-name entry) goes through the tar
        // crate: with an empty body `append_data` writes no padding. The body
        // is copied below by our own loop rather than the crate's `io::copy`,
        // so that a failed read (the source: `Read`/`Changed`) and a failed
        // write (the output: `Write`) are told apart where they happen, and
        // progress is reported inside large files. The crate would not check
        // the length either; `ExactReader` does.
        self.builder
            .append_data(&mut header, e.name, io::empty())
            .map_err(write_err)?;

        let mut reader = ExactReader::new(&file, size);
        loop {
            let n = match reader.read(&mut self.buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(source) => {
                    return Err(match reader.mismatch() {
                        Some(change) => PackError::Changed {
                            path: src.to_path_buf(),
                            size,
                            change,
                        },
                        None => PackError::Read {
                            path: src.to_path_buf(),
                            source,
                        },
                    })
                }
            };
            self.builder
                .get_mut()
                .write_all(&self.buf[..n])
                .map_err(write_err)?;
            self.report();
        }
        // Same size is not same bytes: a recorder rewriting a file in place
        // keeps the size but moves mtime and ctime, and what we read is then
        // a mix of both versions.
        let after = Stat::of(&file).map_err(read_err)?;
        if !after.same_version(&before) {
            return Err(changed(Change::Rewritten));
        }
        // Pad the body to a whole 512-byte block, as `append` would have.
        let tail = (size % 512) as usize;
        if tail != 0 {
            self.builder
                .get_mut()
                .write_all(&[0u8; 512][..512 - tail])
                .map_err(write_err)?;
        }
        self.report();
        Ok(())
    }

    /// Calls the progress callback if another `PROGRESS_EVERY` bytes went by.
    fn report(&mut self) {
        let raw = self.builder.get_ref().count();
        if raw >= self.next_report {
            (self.progress)(raw);
            self.next_report = raw + PROGRESS_EVERY;
        }
    }
}

fn write_err(source: io::Error) -> PackError {
    PackError::Write {
        phase: WritePhase::Entries,
        source,
    }
}

/// A GNU header with the metadata we keep: type, size, permission bits and
/// mtime. Owners are zeroed (uid/gid 0, no names): they mean nothing on the
/// central node and would make the bytes depend on the lab host's accounts.
fn header_for(st: &Stat, kind: EntryType, size: u64) -> Header {
    let mut header = Header::new_gnu();
    header.set_entry_type(kind);
    header.set_size(size);
    header.set_mode(st.mode & 0o7777);
    // Seconds only (sub-second times would need pax headers); times before
    // 1970 are clamped, since the octal field cannot hold a negative number.
    header.set_mtime(u64::try_from(st.mtime).unwrap_or(0));
    header.set_uid(0);
    header.set_gid(0);
    header
}

/// A reader that yields exactly `size` bytes of `inner` or fails.
///
/// EOF before `size` bytes is an error (the file shrank); after `size` bytes
/// it reads one more byte, and if there is one that is an error too (the file
/// grew). Either way the archive would otherwise be silently wrong: the tar
/// header already promised `size` bytes. `mismatch` tells these errors apart
/// from the inner reader's own.
struct ExactReader<R> {
    inner: R,
    size: u64,
    left: u64,
    mismatch: Option<Change>,
}

impl<R: Read> ExactReader<R> {
    fn new(inner: R, size: u64) -> ExactReader<R> {
        ExactReader {
            inner,
            size,
            left: size,
            mismatch: None,
        }
    }

    /// The size mismatch behind the last error, if that was the cause.
    fn mismatch(&self) -> Option<Change> {
        self.mismatch
    }
}

impl<R: Read> Read for ExactReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.left == 0 {
            let mut probe = [0u8; 1];
            return match self.inner.read(&mut probe)? {
                0 => Ok(0),
                _ => {
                    self.mismatch = Some(Change::Grew);
                    Err(io::Error::other("file grew while being read"))
                }
            };
        }
        if buf.is_empty() {
            return Ok(0);
        }
        let want = usize::try_from(self.left).map_or(buf.len(), |left| left.min(buf.len()));
        let n = self.inner.read(&mut buf[..want])?;
        if n == 0 {
            self.mismatch = Some(Change::Shrank {
                read: self.size - self.left,
            });
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "file shrank while being read",
            ));
        }
        self.left -= n as u64;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs::File;

    use std::collections::BTreeMap;
    use std::ffi::OsStr;
    use std::fs;
    use std::os::unix::fs::MetadataExt;
    use std::os::unix::fs::{symlink, PermissionsExt};
    use std::process::{Command, Stdio};
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::{Duration, SystemTime};

    use crate::hashing::sha256_file;

    const OPTS: PackOptions = PackOptions {
        level: 3,
        threads: 0,
    };

    /// A fresh, empty directory unique to this process and call.
    fn temp_dir(name: &str) -> PathBuf {
        static N: AtomicUsize = AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "cis490-pack-test-{}-{}-{name}",
            std::process::id(),
            N.fetch_add(1, Ordering::SeqCst)
        ));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        dir
    }

    /// Runs a command to completion; on failure (or if the tool is missing)
    /// panics with the command, its status and its stderr.
    fn run(cmd: &mut Command) -> Vec<u8> {
        // `output()` gives the child an empty stdin unless one was set.
        let out = match cmd.output() {
            Ok(out) => out,
            Err(e) => panic!(
                "could not run {cmd:?}: {e} (these tests need the GNU tar and zstd CLIs on PATH)"
            ),
        };
        assert!(
            out.status.success(),
            "{cmd:?} failed: {}\nstdout: {}\nstderr: {}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        out.stdout
    }

    /// `zstd -t` (frame and checksum), then `zstd -dc tarball | tar -xpf - -C dest`.
    fn extract_with_cli(tarball: &Path, dest: &Path) {
        run(Command::new("zstd").arg("-q").arg("-t").arg(tarball));
        fs::create_dir_all(dest).unwrap();
        let mut zstd = spawn_zstd_dc(tarball);
        let stdout = zstd.stdout.take().unwrap();
        run(Command::new("tar")
            .arg("-xpf")
            .arg("-")
            .arg("-C")
            .arg(dest)
            .stdin(stdout));
        assert!(zstd.wait().unwrap().success(), "zstd -dc failed");
    }

    /// `zstd -dc tarball | tar -tvf -`, for what GNU tar thinks of the headers.
    fn list_with_cli(tarball: &Path) -> String {
        let mut zstd = spawn_zstd_dc(tarball);
        let stdout = zstd.stdout.take().unwrap();
        let out = run(Command::new("tar")
            .arg("--numeric-owner")
            .arg("-tvf")
            .arg("-")
            .stdin(stdout));
        assert!(zstd.wait().unwrap().success(), "zstd -dc failed");
        String::from_utf8(out).unwrap()
    }

    fn spawn_zstd_dc(tarball: &Path) -> std::process::Child {
        let child = Command::new("zstd")
            .arg("-dc")
            .arg(tarball)
            .stdout(Stdio::piped())
            .spawn();
        match child {
            Ok(child) => child,
            Err(e) => panic!("could not run zstd: {e} (these tests need the zstd CLI on PATH)"),
        }
    }

    fn pack_to(dir: &Path, id: &str, out: &Path, opts: &PackOptions) -> Result<Packed, PackError> {
        let file = File::options()
            .write(true)
            .create_new(true)
            .open(out)
            .unwrap();
        let (file, packed) = pack_episode(dir, id, file, opts, &mut |_| {})?;
        file.sync_all().unwrap();
        Ok(packed)
    }

    fn set_mtime(path: &Path, secs: u64) {
        let f = File::options()
            .write(true)
            .open(path)
            .or_else(|_| File::open(path))
            .unwrap();
        f.set_modified(SystemTime::UNIX_EPOCH + Duration::from_secs(secs))
            .unwrap();
    }

    fn chmod(path: &Path, mode: u32) {
        fs::set_permissions(path, fs::Permissions::from_mode(mode)).unwrap();
    }

    /// What we promise to keep of each entry.
    #[derive(Debug, PartialEq, Eq)]
    enum Node {
        Dir {
            mode: u32,
            mtime: i64,
        },
        File {
            mode: u32,
            mtime: i64,
            data: Vec<u8>,
        },
        Link {
            target: PathBuf,
        },
    }

    fn snapshot(root: &Path) -> BTreeMap<PathBuf, Node> {
        fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<PathBuf, Node>) {
            for entry in fs::read_dir(dir).unwrap() {
                let path = entry.unwrap().path();
                let meta = fs::symlink_metadata(&path).unwrap();
                let rel = path.strip_prefix(root).unwrap().to_path_buf();
                let mode = meta.mode() & 0o7777;
                let mtime = meta.mtime();
                if meta.is_dir() {
                    out.insert(rel, Node::Dir { mode, mtime });
                    walk(root, &path, out);
                } else if meta.is_file() {
                    let data = fs::read(&path).unwrap();
                    out.insert(rel, Node::File { mode, mtime, data });
                } else if meta.file_type().is_symlink() {
                    let target = fs::read_link(&path).unwrap();
                    out.insert(rel, Node::Link { target });
                }
            }
        }
        let mut out = BTreeMap::new();
        walk(root, root, &mut out);
        out
    }

    /// A tree with a bit of everything the round trip must keep.
    fn make_tree(ep: &Path) {
        fs::create_dir_all(ep.join("cam0")).unwrap();
        fs::create_dir_all(ep.join("empty")).unwrap();
        fs::create_dir_all(ep.join("nested/deeper")).unwrap();
        for (name, len) in [("a0", 0usize), ("a511", 511), ("a512", 512), ("a513", 513)] {
            let data: Vec<u8> = (0..len).map(|i| (i * 31 % 256) as u8).collect();
            fs::write(ep.join(name), data).unwrap();
        }
        // Larger than the copy buffer, not a multiple of it or of 512.
        let big: Vec<u8> = (0..(crate::IO_CHUNK * 2 + 777))
            .map(|i| (i % 253) as u8)
            .collect();
        fs::write(ep.join("cam0/000000.jpg"), &big).unwrap();
        fs::write(ep.join("nested/deeper/joints.f32"), [1u8; 4096]).unwrap();
        fs::write(ep.join("meta.json"), b"{\"robot\":\"arm-1\"}").unwrap();
        // Not UTF-8: names are bytes on Linux, and must come back as such.
        fs::write(ep.join(OsStr::from_bytes(b"caf\xe9")), b"latin-1").unwrap();
        fs::write(ep.join("run.sh"), b"#!/bin/sh\n").unwrap();
        chmod(&ep.join("run.sh"), 0o750);
        chmod(&ep.join("a511"), 0o600);
        chmod(&ep.join("a513"), 0o444);
        fs::hard_link(ep.join("meta.json"), ep.join("meta-hardlink.json")).unwrap();
        symlink("cam0/000000.jpg", ep.join("latest.jpg")).unwrap();
        symlink("../../etc/passwd", ep.join("outside")).unwrap();
        symlink("does/not/exist", ep.join("dangling")).unwrap();
        symlink("/etc/hostname", ep.join("absolute")).unwrap();
        symlink("./cam0//000000.jpg", ep.join("unnormalised")).unwrap();
        symlink(format!("{}/x", "t".repeat(140)), ep.join("long-target")).unwrap();
        chmod(&ep.join("nested"), 0o750);
        // Dirs last: creating children updates a directory's mtime.
        for (i, p) in [
            "a0",
            "a511",
            "a512",
            "a513",
            "cam0/000000.jpg",
            "nested/deeper/joints.f32",
            "meta.json",
            "run.sh",
        ]
        .iter()
        .enumerate()
        {
            set_mtime(&ep.join(p), 1_600_000_000 + i as u64 * 1111);
        }
        set_mtime(&ep.join("empty"), 1_500_000_000);
        set_mtime(&ep.join("nested/deeper"), 1_500_000_001);
        set_mtime(&ep.join("nested"), 1_500_000_002);
        set_mtime(&ep.join("cam0"), 1_500_000_003);
        set_mtime(ep, 1_500_000_004);
    }

    #[test]
    fn round_trip_through_gnu_tar_and_zstd() {
        let tmp = temp_dir("roundtrip");
        let ep = tmp.join("src/ep-001");
        fs::create_dir_all(&ep).unwrap();
        make_tree(&ep);
        let out = tmp.join("ep-001.tar.zst.partial");
        let packed = pack_to(&ep, "ep-001", &out, &OPTS).unwrap();
        assert!(packed.warnings.is_empty(), "{:?}", packed.warnings);
        assert_eq!(packed.raw_bytes % 512, 0, "tar is made of 512-byte blocks");

        let dest = tmp.join("dest");
        extract_with_cli(&out, &dest);
        let got = snapshot(&dest.join("ep-001"));
        let want = snapshot(&ep);
        assert_eq!(
            got.keys().collect::<Vec<_>>(),
            want.keys().collect::<Vec<_>>()
        );
        for (k, v) in &want {
            assert_eq!(&got[k], v, "{}", k.display());
        }
        // The top directory's own mode and mtime come through too.
        let top = fs::metadata(dest.join("ep-001")).unwrap();
        assert_eq!(top.mtime(), 1_500_000_004);
        assert_eq!(
            fs::read_link(dest.join("ep-001/unnormalised")).unwrap(),
            Path::new("./cam0//000000.jpg")
        );
        // Hard links come back as independent copies.
        assert_eq!(
            fs::read(dest.join("ep-001/meta-hardlink.json")).unwrap(),
            b"{\"robot\":\"arm-1\"}"
        );
        fs::remove_dir_all(&tmp).unwrap();
    }

    #[test]
    fn headers_are_sorted_owned_by_root_and_under_the_id() {
        let tmp = temp_dir("headers");
        let ep = tmp.join("ep");
        fs::create_dir_all(&ep).unwrap();
        make_tree(&ep);
        let out = tmp.join("out.tar.zst");
        pack_to(&ep, "ep-7", &out, &OPTS).unwrap();

        let decoder = zstd::stream::read::Decoder::new(File::open(&out).unwrap()).unwrap();
        let mut archive = tar::Archive::new(decoder);
        let mut names = Vec::new();
        for entry in archive.entries().unwrap() {
            let entry = entry.unwrap();
            let h = entry.header();
            assert!(h.as_gnu().is_some(), "GNU header");
            assert_eq!((h.uid().unwrap(), h.gid().unwrap()), (0, 0));
            assert_eq!(h.username_bytes(), Some(&b""[..]));
            assert_eq!(h.groupname_bytes(), Some(&b""[..]));
            names.push(String::from_utf8_lossy(&entry.path_bytes()).into_owned());
        }
        let expected = [
            "ep-7/",
            "ep-7/a0",
            "ep-7/a511",
            "ep-7/a512",
            "ep-7/a513",
            "ep-7/absolute",
            "ep-7/caf\u{fffd}",
            "ep-7/cam0/",
            "ep-7/cam0/000000.jpg",
            "ep-7/dangling",
            "ep-7/empty/",
            "ep-7/latest.jpg",
            "ep-7/long-target",
            "ep-7/meta-hardlink.json",
            "ep-7/meta.json",
            "ep-7/nested/",
            "ep-7/nested/deeper/",
            "ep-7/nested/deeper/joints.f32",
            "ep-7/outside",
            "ep-7/run.sh",
            "ep-7/unnormalised",
        ];
        assert_eq!(names, expected);
        fs::remove_dir_all(&tmp).unwrap();
    }

    #[test]
    fn same_tree_same_bytes_and_digest_is_of_the_file() {
        let tmp = temp_dir("determinism");
        // Two copies of one tree, made in opposite orders so readdir order
        // (and inode numbers, ctimes, atimes) differ.
        let a = tmp.join("a");
        let b = tmp.join("b");
        for (dir, names) in [
            (&a, ["z", "m", "a", "B", "é"]),
            (&b, ["é", "B", "a", "m", "z"]),
        ] {
            fs::create_dir_all(dir.join("sub")).unwrap();
            for n in names {
                fs::write(dir.join(n), n.repeat(1000)).unwrap();
                fs::write(dir.join("sub").join(n), n).unwrap();
                set_mtime(&dir.join(n), 1_700_000_000);
                set_mtime(&dir.join("sub").join(n), 1_700_000_000);
            }
            set_mtime(&dir.join("sub"), 1_700_000_000);
            set_mtime(dir, 1_700_000_000);
        }
        for opts in [
            OPTS,
            PackOptions {
                level: 1,
                threads: 2,
            },
        ] {
            let t = opts.threads;
            let pa = pack_to(&a, "ep", &tmp.join(format!("a{t}")), &opts).unwrap();
            let pa2 = pack_to(&a, "ep", &tmp.join(format!("a2{t}")), &opts).unwrap();
            let mut pb = pack_to(&b, "ep", &tmp.join(format!("b{t}")), &opts).unwrap();
            // A copy has other inodes and ctimes: the tree fingerprint tells
            // the two apart by design, the archive bytes must not.
            assert_ne!(pb.tree, pa.tree);
            pb.tree = pa.tree;
            assert_eq!(pa, pa2);
            assert_eq!(pa, pb);
            let (digest, len) = sha256_file(&tmp.join(format!("a{t}"))).unwrap();
            assert_eq!(digest, pa.sha256, "digest is of the bytes on disk");
            assert_eq!(len, pa.compressed_bytes);
            assert_eq!(
                fs::read(tmp.join(format!("a{t}"))).unwrap(),
                fs::read(tmp.join(format!("b{t}"))).unwrap()
            );
        }
        fs::remove_dir_all(&tmp).unwrap();
    }

    #[test]
    fn fifos_and_sockets_are_skipped_with_a_warning() {
        let tmp = temp_dir("special");
        let ep = tmp.join("ep");
        fs::create_dir_all(&ep).unwrap();
        fs::write(ep.join("data"), b"x").unwrap();
        run(Command::new("mkfifo").arg(ep.join("pipe")));
        let _sock = std::os::unix::net::UnixListener::bind(ep.join("sock")).unwrap();
        let out = tmp.join("out.tar.zst");
        let packed = pack_to(&ep, "ep", &out, &OPTS).unwrap();
        assert_eq!(packed.warnings.len(), 2, "{:?}", packed.warnings);
        assert!(packed.warnings[0].contains(&format!("{}", ep.join("pipe").display())));
        assert!(
            packed.warnings[0].contains("fifo"),
            "{}",
            packed.warnings[0]
        );
        assert!(packed.warnings[1].contains("sock"));
        assert!(
            packed.warnings[1].contains("a socket"),
            "{}",
            packed.warnings[1]
        );
        let listing = list_with_cli(&out);
        assert!(listing.contains("ep/data"), "{listing}");
        assert!(
            !listing.contains("pipe") && !listing.contains("sock"),
            "{listing}"
        );
        fs::remove_dir_all(&tmp).unwrap();
    }

    #[test]
    fn long_names_and_long_link_targets() {
        let tmp = temp_dir("long");
        let ep = tmp.join("ep");
        // > 100 bytes (needs the GNU long name), then > 255 bytes in total.
        let d1 = "d".repeat(120);
        let d2 = "e".repeat(200);
        let f = format!("{}.bin", "f".repeat(200));
        fs::create_dir_all(ep.join(&d1).join(&d2)).unwrap();
        fs::write(ep.join(&d1).join(&f), b"one").unwrap();
        fs::write(ep.join(&d1).join(&d2).join(&f), b"two").unwrap();
        let target = format!("../{d1}/{f}/{}", "x".repeat(300));
        symlink(&target, ep.join(&d1).join(&d2).join("link")).unwrap();
        let out = tmp.join("out.tar.zst");
        pack_to(&ep, "ep", &out, &OPTS).unwrap();

        let dest = tmp.join("dest");
        extract_with_cli(&out, &dest);
        let got = dest.join("ep").join(&d1).join(&d2);
        assert!(got.join(&f).as_os_str().len() > 255 + dest.as_os_str().len());
        assert_eq!(
            fs::read(dest.join("ep").join(&d1).join(&f)).unwrap(),
            b"one"
        );
        assert_eq!(fs::read(got.join(&f)).unwrap(), b"two");
        assert_eq!(fs::read_link(got.join("link")).unwrap(), Path::new(&target));
        assert_eq!(snapshot(&dest.join("ep")), snapshot(&ep));
        fs::remove_dir_all(&tmp).unwrap();
    }

    /// Packs `ep` with a progress callback that calls `meddle` once, after
    /// the first MiB of raw tar bytes.
    fn pack_meddling(ep: &Path, out: &Path, meddle: impl FnOnce()) -> Result<Packed, PackError> {
        let file = File::create(out).unwrap();
        let mut meddle = Some(meddle);
        let mut calls = Vec::new();
        let r = pack_episode(ep, "ep", file, &OPTS, &mut |raw| {
            calls.push(raw);
            // Mid-file: past the first MiB of the (only) file's data.
            if raw >= PROGRESS_EVERY {
                if let Some(m) = meddle.take() {
                    m();
                }
            }
        });
        assert!(meddle.is_none(), "progress never passed 1 MiB: {calls:?}");
        r.map(|(_, packed)| packed)
    }

    #[test]
    fn a_file_that_shrinks_while_packed_is_an_error() {
        let tmp = temp_dir("shrink");
        let ep = tmp.join("ep");
        fs::create_dir_all(&ep).unwrap();
        let data = ep.join("data");
        fs::write(&data, vec![5u8; 4 << 20]).unwrap();
        let err = pack_meddling(&ep, &tmp.join("out"), || {
            File::options()
                .write(true)
                .open(&data)
                .unwrap()
                .set_len(2 << 20)
                .unwrap();
        })
        .unwrap_err();
        match &err {
            PackError::Changed { path, size, change } => {
                assert_eq!(path, &data);
                assert_eq!(*size, 4 << 20);
                assert_eq!(*change, Change::Shrank { read: 2 << 20 });
            }
            other => panic!("expected Changed, got {other:?}"),
        }
        let msg = err.to_string();
        assert!(
            msg.contains("changed size while being packed (was 4194304 bytes"),
            "{msg}"
        );
        assert!(msg.contains("retried next pass"), "{msg}");
        assert!(!err.is_no_space());
        fs::remove_dir_all(&tmp).unwrap();
    }

    /// D6: a recorder rewriting the first and last MiB of a file in place
    /// (same size) while it is packed: the archive would hold old bytes at
    /// the front and new ones at the back. The fstat after reading sees the
    /// new mtime/ctime.
    #[test]
    fn a_file_rewritten_in_place_while_packed_is_an_error() {
        let tmp = temp_dir("rewrite");
        let ep = tmp.join("ep");
        fs::create_dir_all(&ep).unwrap();
        let data = ep.join("data");
        fs::write(&data, vec![5u8; 4 << 20]).unwrap();
        // Written long ago, as a finished recording is.
        set_mtime(&data, 1_700_000_000);
        let err = pack_meddling(&ep, &tmp.join("out"), || {
            use std::os::unix::fs::FileExt;
            let f = File::options().write(true).open(&data).unwrap();
            f.write_all_at(&[6u8; 1 << 20], 0).unwrap();
            f.write_all_at(&[6u8; 1 << 20], 3 << 20).unwrap();
        })
        .unwrap_err();
        assert!(
            matches!(&err, PackError::Changed { change: Change::Rewritten, path, .. } if *path == data),
            "{err:?}"
        );
        assert!(
            err.to_string().contains("was modified while being packed"),
            "{err}"
        );
        fs::remove_dir_all(&tmp).unwrap();
    }

    /// D4: a directory swapped for a symlink (to a directory only the
    /// shipper may read) after the walk listed it: nothing of the link's
    /// target is ever packed, because every open is relative to the
    /// descriptor of the directory that was listed.
    #[test]
    fn a_directory_swapped_for_a_symlink_mid_walk_is_never_followed() {
        let tmp = temp_dir("swap");
        let secret = tmp.join("secret");
        fs::create_dir_all(&secret).unwrap();
        fs::write(secret.join("b-frame"), b"SECRET-BYTES").unwrap();
        let ep = tmp.join("ep");
        fs::create_dir_all(ep.join("sub")).unwrap();
        // `a-big` is read first; while it is, `sub` becomes a symlink.
        fs::write(ep.join("sub/a-big"), vec![1u8; 4 << 20]).unwrap();
        fs::write(ep.join("sub/b-frame"), b"recorded frame").unwrap();
        let out = tmp.join("out.tar.zst");
        let packed = pack_meddling(&ep, &out, || {
            fs::rename(ep.join("sub"), ep.join("sub.orig")).unwrap();
            symlink(&secret, ep.join("sub")).unwrap();
        });
        if packed.is_ok() {
            let dest = tmp.join("dest");
            extract_with_cli(&out, &dest);
            let frame = fs::read(dest.join("ep/sub/b-frame")).unwrap();
            assert_eq!(frame, b"recorded frame");
        }
        let raw = run(Command::new("zstd").args(["-dc"]).arg(&out));
        assert!(
            !raw.windows(12).any(|w| w == b"SECRET-BYTES"),
            "the symlink's target was packed"
        );
        fs::remove_dir_all(&tmp).unwrap();
    }

    /// D5: a tree deeper than PATH_MAX packs faithfully (GNU long names),
    /// since nothing is ever opened by its full path.
    #[test]
    fn paths_longer_than_path_max_are_packed() {
        let tmp = temp_dir("deep");
        let ep = tmp.join("ep");
        fs::create_dir_all(&ep).unwrap();
        let name = "d".repeat(200);
        // Built one level at a time, relative to the last (the full path
        // is too long for mkdir(2) itself, and for the shell's `cd`).
        let script = format!(
            "import os, sys\n\
             fd = os.open(sys.argv[1], os.O_DIRECTORY)\n\
             for _ in range(25):\n\
             \x20   os.mkdir('{name}', dir_fd=fd)\n\
             \x20   fd = os.open('{name}', os.O_DIRECTORY, dir_fd=fd)\n\
             f = os.open('file', os.O_WRONLY | os.O_CREAT, 0o644, dir_fd=fd)\n\
             os.write(f, b'deep')\n"
        );
        let st = Command::new("python3")
            .args(["-c", &script])
            .arg(&ep)
            .status()
            .expect("python3");
        assert!(st.success());
        let out = tmp.join("out.tar.zst");
        let packed = pack_to(&ep, "ep", &out, &OPTS).unwrap();
        assert_eq!(packed.tree.entries, 27);
        let listing = list_with_cli(&out);
        let deepest = listing
            .lines()
            .find(|l| l.ends_with("/file"))
            .unwrap_or_else(|| panic!("no file in\n{listing}"));
        let member = deepest.split_whitespace().last().unwrap();
        assert!(member.len() > libc::PATH_MAX as usize, "{}", member.len());
        let z = std::process::Command::new("sh")
            .args(["-c", "zstd -dc \"$1\" | tar -xO -f - \"$2\"", "sh"])
            .arg(&out)
            .arg(member)
            .output()
            .unwrap();
        assert_eq!(z.stdout, b"deep", "{}", String::from_utf8_lossy(&z.stderr));
        fs::remove_dir_all(&tmp).unwrap();
    }

    #[test]
    fn a_file_that_grows_while_packed_is_an_error() {
        let tmp = temp_dir("grow");
        let ep = tmp.join("ep");
        fs::create_dir_all(&ep).unwrap();
        let data = ep.join("data");
        fs::write(&data, vec![5u8; 4 << 20]).unwrap();
        let err = pack_meddling(&ep, &tmp.join("out"), || {
            let mut f = File::options().append(true).open(&data).unwrap();
            f.write_all(b"late frame").unwrap();
        })
        .unwrap_err();
        assert!(
            matches!(&err, PackError::Changed { change: Change::Grew, size, .. } if *size == 4 << 20),
            "{err:?}"
        );
        fs::remove_dir_all(&tmp).unwrap();
    }

    /// A fake file: `data`, but EOF comes after `eof_at` bytes.
    struct Fake {
        data: Vec<u8>,
        pos: usize,
        eof_at: usize,
        max_read: usize,
    }

    impl Read for Fake {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            let end = self.data.len().min(self.eof_at);
            let n = buf.len().min(end - self.pos).min(self.max_read);
            buf[..n].copy_from_slice(&self.data[self.pos..self.pos + n]);
            self.pos += n;
            Ok(n)
        }
    }

    fn fake(len: usize, eof_at: usize) -> Fake {
        Fake {
            data: (0..len).map(|i| i as u8).collect(),
            pos: 0,
            eof_at,
            max_read: 7,
        }
    }

    #[test]
    fn exact_reader_passes_exactly_size_bytes() {
        for len in [0, 1, 7, 100] {
            let mut r = ExactReader::new(fake(len, usize::MAX), len as u64);
            let mut out = Vec::new();
            r.read_to_end(&mut out).unwrap();
            assert_eq!(out, fake(len, len).data);
            assert_eq!(r.mismatch(), None);
        }
    }

    #[test]
    fn exact_reader_fails_on_a_shrunk_source() {
        let mut r = ExactReader::new(fake(100, 60), 100);
        let mut out = Vec::new();
        let err = r.read_to_end(&mut out).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof);
        assert_eq!(r.mismatch(), Some(Change::Shrank { read: 60 }));
        assert_eq!(out.len(), 60);
    }

    #[test]
    fn exact_reader_fails_on_a_grown_source() {
        let mut r = ExactReader::new(fake(101, usize::MAX), 100);
        let mut out = Vec::new();
        r.read_to_end(&mut out).unwrap_err();
        assert_eq!(r.mismatch(), Some(Change::Grew));
        // It never hands out more than `size` bytes.
        assert_eq!(out.len(), 100);

        let mut r = ExactReader::new(fake(1, usize::MAX), 0);
        let mut buf = [0u8; 16];
        r.read(&mut buf).unwrap_err();
        assert_eq!(r.mismatch(), Some(Change::Grew));
    }

    #[test]
    fn exact_reader_passes_inner_errors_through() {
        struct Broken;
        impl Read for Broken {
            fn read(&mut self, _: &mut [u8]) -> io::Result<usize> {
                Err(io::Error::from_raw_os_error(libc::EIO))
            }
        }
        let mut r = ExactReader::new(Broken, 10);
        let err = r.read(&mut [0u8; 4]).unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::EIO));
        assert_eq!(r.mismatch(), None);
    }

    #[test]
    fn disk_full_is_reported_as_no_space() {
        let tmp = temp_dir("full");
        let ep = tmp.join("ep");
        fs::create_dir_all(&ep).unwrap();
        // Incompressible, so zstd has output to write before the end.
        let mut x = 0x1234_5678_9abc_def0u64;
        let noise: Vec<u8> = (0..(3 << 20))
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect();
        fs::write(ep.join("noise"), noise).unwrap();
        // /dev/full fails every write with ENOSPC.
        let full = File::options().write(true).open("/dev/full").unwrap();
        let err = pack_episode(&ep, "ep", full, &OPTS, &mut |_| {}).unwrap_err();
        assert!(err.is_no_space(), "{err:?}");
        assert!(
            matches!(
                err,
                PackError::Write {
                    phase: WritePhase::Entries,
                    ..
                }
            ),
            "{err:?}"
        );
        assert!(
            err.to_string().starts_with("writing the tarball: "),
            "{err}"
        );
        assert!(std::error::Error::source(&err).is_some());

        // A small episode fits in zstd's buffers: the error comes at the end
        // of the frame, and must still surface.
        let small = tmp.join("small-ep");
        fs::create_dir_all(&small).unwrap();
        fs::write(small.join("f"), b"tiny").unwrap();
        let full = File::options().write(true).open("/dev/full").unwrap();
        let err = pack_episode(&small, "ep", full, &OPTS, &mut |_| {}).unwrap_err();
        assert!(err.is_no_space(), "{err:?}");
        assert!(
            matches!(
                err,
                PackError::Write {
                    phase: WritePhase::ZstdFrame,
                    ..
                }
            ),
            "{err:?}"
        );
        fs::remove_dir_all(&tmp).unwrap();
    }

    #[test]
    fn bad_inputs_are_named_in_the_error() {
        let tmp = temp_dir("bad");
        let out = || File::create(tmp.join("out")).unwrap();
        for id in ["", ".", "..", "a/b", "nul\0"] {
            let err = pack_episode(&tmp, id, out(), &OPTS, &mut |_| {}).unwrap_err();
            assert!(
                matches!(err, PackError::BadEpisodeId { .. }),
                "{id:?}: {err:?}"
            );
        }
        let missing = tmp.join("missing");
        let err = pack_episode(&missing, "ep", out(), &OPTS, &mut |_| {}).unwrap_err();
        assert!(
            err.to_string()
                .starts_with(&format!("reading {}: ", missing.display())),
            "{err}"
        );
        fs::create_dir_all(tmp.join("real")).unwrap();
        symlink("real", tmp.join("link")).unwrap();
        let err = pack_episode(&tmp.join("link"), "ep", out(), &OPTS, &mut |_| {}).unwrap_err();
        assert!(matches!(err, PackError::NotADirectory { .. }), "{err:?}");
        fs::remove_dir_all(&tmp).unwrap();
    }

    #[test]
    fn progress_is_cumulative_and_ends_at_raw_bytes() {
        let tmp = temp_dir("progress");
        let ep = tmp.join("ep");
        fs::create_dir_all(&ep).unwrap();
        for i in 0..5 {
            fs::write(ep.join(format!("f{i}")), vec![i as u8; 1_500_000]).unwrap();
        }
        let mut calls = Vec::new();
        let file = File::create(tmp.join("out")).unwrap();
        let (_, packed) = pack_episode(&ep, "ep", file, &OPTS, &mut |n| calls.push(n)).unwrap();
        assert!(calls.windows(2).all(|w| w[0] < w[1]), "{calls:?}");
        // The first report is early (the top directory's header), the last is
        // the total; in between they are spaced by at least PROGRESS_EVERY.
        assert_eq!(calls[0], 512);
        let spaced = &calls[..calls.len() - 1];
        assert!(
            spaced.windows(2).all(|w| w[1] - w[0] >= PROGRESS_EVERY),
            "{calls:?}"
        );
        assert!(calls.len() >= 5, "{calls:?}");
        assert_eq!(calls.last(), Some(&packed.raw_bytes));
        fs::remove_dir_all(&tmp).unwrap();
    }

    /// Sizes from 8 GiB up use the GNU base-256 size field; GNU tar must read
    /// it back. A sparse file keeps the disk cost at zero; reading 8.5 GiB
    /// of zeros takes ~20 s (mostly kernel time), part of `make test` since
    /// "files over 8 GiB correct" is a requirement, not an option.
    #[test]
    fn files_over_8_gib_list_with_the_right_size() {
        let tmp = temp_dir("huge");
        let ep = tmp.join("ep");
        fs::create_dir_all(&ep).unwrap();
        let size: u64 = 8 * 1024 * 1024 * 1024 + 512 * 1024 * 1024 + 3;
        File::create(ep.join("huge"))
            .unwrap()
            .set_len(size)
            .unwrap();
        let out = tmp.join("out.tar.zst");
        let opts = PackOptions {
            level: 1,
            threads: 0,
        };
        let packed = pack_to(&ep, "ep", &out, &opts).unwrap();
        assert!(packed.raw_bytes > size);
        let listing = list_with_cli(&out);
        let line = listing
            .lines()
            .find(|l| l.ends_with("ep/huge"))
            .unwrap_or_else(|| panic!("no ep/huge in\n{listing}"));
        assert!(line.contains(&format!(" {size} ")), "{line}");
        fs::remove_dir_all(&tmp).unwrap();
    }
}
