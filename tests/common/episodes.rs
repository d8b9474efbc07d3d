//! Deterministic synthetic robot-lab episodes for integration tests, the demo
//! and benchmarks (the Rust twin of `mkepisodes.py`, so a clone of this
//! repository carries its own generator).
//!
//! An episode mixes what real recordings hold: incompressible camera frames
//! (~60% of the bytes, `cam0/NNNNNN.jpg`, 256 KiB each), compressible float32
//! joint-state ramps (~40%, `joints.f32`), a small `meta.json`, and, when
//! asked, an empty `done.marker`. The same `(id, bytes, seed)` always gives the
//! same file contents; mtimes are the time of writing (see `set_tree_mtime`).
//!
//! Everything is written in chunks of at most 256 KiB, so a multi-GiB episode
//! needs no more memory than a small one. I/O errors panic with the path: this
//! is test and demo support, not product code.

use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

/// Size of one camera frame, as in `mkepisodes.py`.
#[allow(dead_code)]
pub const FRAME_BYTES: u64 = 256 * 1024;

/// Floats per joint-state chunk; the ramp's offset steps by 0.5 per chunk.
#[allow(dead_code)]
const JOINT_CHUNK: usize = 4096;

/// Creates `data_dir/episodes/<id>/` holding about `bytes` bytes of data and
/// returns its path. Existing files of the same names are overwritten.
///
/// The random stream depends on both `seed` and `id`, so episodes made with
/// one seed still differ from each other.
#[allow(dead_code)]
pub fn make_episode(
    data_dir: &Path,
    id: &str,
    bytes: u64,
    seed: u64,
    done_marker: bool,
) -> PathBuf {
    let ep = data_dir.join("episodes").join(id);
    let cam_dir = ep.join("cam0");
    or_die(fs::create_dir_all(&cam_dir), "creating", &cam_dir);

    // 60% camera frames, integer arithmetic to stay exact for huge sizes.
    let cam = bytes / 10 * 6 + bytes % 10 * 6 / 10;
    let mut rng = SplitMix64::new(seed ^ fnv1a(id.as_bytes()));
    let mut frame = vec![0u8; FRAME_BYTES as usize];
    let mut written = 0u64;
    while written < cam {
        let k = (cam - written).min(FRAME_BYTES) as usize;
        rng.fill(&mut frame[..k]);
        let path = cam_dir.join(format!("{:06}.jpg", written / FRAME_BYTES));
        or_die(fs::write(&path, &frame[..k]), "writing", &path);
        written += k as u64;
    }

    write_joints(&ep.join("joints.f32"), (bytes - cam) / 4);

    let meta = format!(
        "{{\"episode\": \"{id}\", \"robot\": \"arm-1\", \"hz\": 1000, \"bytes\": {bytes}, \"seed\": {seed}}}"
    );
    let meta_path = ep.join("meta.json");
    or_die(fs::write(&meta_path, meta), "writing", &meta_path);

    if done_marker {
        let marker = ep.join("done.marker");
        or_die(fs::write(&marker, b""), "writing", &marker);
    }
    ep
}

/// Sets the mtime of `dir` and everything below it (symlinks excepted) to
/// `secs` after the epoch, for tests that need identical tarballs from two
/// generations of the same episode.
#[allow(dead_code)]
pub fn set_tree_mtime(dir: &Path, secs: u64) {
    let when = SystemTime::UNIX_EPOCH + Duration::from_secs(secs);
    let entries = or_die(fs::read_dir(dir), "listing", dir);
    for entry in entries {
        let entry = or_die(entry, "listing", dir);
        let path = entry.path();
        let ft = or_die(entry.file_type(), "stat-ing", &path);
        if ft.is_dir() {
            set_tree_mtime(&path, secs);
        } else if ft.is_file() {
            let f = or_die(File::options().write(true).open(&path), "opening", &path);
            or_die(f.set_modified(when), "setting mtime of", &path);
        }
    }
    // Last, since creating or touching children does not, but adding would.
    let d = or_die(File::open(dir), "opening", dir);
    or_die(d.set_modified(when), "setting mtime of", dir);
}

/// `count` float32 ramps (little-endian): `(j % 7) * 0.1 + t`, `t` stepping by
/// 0.5 every 4096 values. Repetitive enough that zstd shrinks it well.
#[allow(dead_code)]
fn write_joints(path: &Path, count: u64) {
    let file = or_die(File::create(path), "creating", path);
    let mut out = io::BufWriter::with_capacity(256 * 1024, file);
    let mut chunk = Vec::with_capacity(JOINT_CHUNK * 4);
    let mut left = count;
    let mut t = 0.0f32;
    while left > 0 {
        let k = left.min(JOINT_CHUNK as u64) as usize;
        chunk.clear();
        for j in 0..k {
            let v = (j % 7) as f32 * 0.1 + t;
            chunk.extend_from_slice(&v.to_le_bytes());
        }
        or_die(out.write_all(&chunk), "writing", path);
        left -= k as u64;
        t += 0.5;
    }
    or_die(out.flush(), "writing", path);
}

/// SplitMix64: tiny, fast, and good enough for bytes that must not compress.
#[allow(dead_code)]
struct SplitMix64(u64);

impl SplitMix64 {
    #[allow(dead_code)]
    fn new(seed: u64) -> SplitMix64 {
        SplitMix64(seed)
    }

    #[allow(dead_code)]
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Fills `buf` eight bytes at a time (byte-at-a-time would dominate the
    /// run time of a multi-GiB episode).
    #[allow(dead_code)]
    fn fill(&mut self, buf: &mut [u8]) {
        let mut chunks = buf.chunks_exact_mut(8);
        for c in &mut chunks {
            c.copy_from_slice(&self.next_u64().to_le_bytes());
        }
        let rest = chunks.into_remainder();
        let last = self.next_u64().to_le_bytes();
        let n = rest.len();
        rest.copy_from_slice(&last[..n]);
    }
}

/// FNV-1a, to fold the episode id into the seed.
#[allow(dead_code)]
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

#[allow(dead_code)]
fn or_die<T>(r: io::Result<T>, what: &str, path: &Path) -> T {
    match r {
        Ok(v) => v,
        Err(e) => panic!("mkepisodes: {what} {}: {e}", path.display()),
    }
}
