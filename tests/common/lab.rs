//! `Lab`: the one fixture the end-to-end tests start from. A temp dir, a
//! test PKI, a real `cis490-receiver` over mTLS on 127.0.0.1 (hosts
//! `lab-01` and `lab-02`), and host `lab-01`'s shipper configuration with
//! its client certificate and token, pointed at that receiver.
//!
//! ```text
//! let lab = Lab::new("name");                                   // defaults
//! let lab = Lab::build("name").receiver_extra("…").start();    // or tuned
//! ```

use std::path::{Path, PathBuf};
use std::process::{Child, Output};

use super::episodes::make_episode;
use super::fs::{extract, names, snapshot, Mtimes};
use super::*;

#[allow(dead_code)]
pub struct Lab {
    pub dir: TempDir,
    #[allow(dead_code)]
    pub pki: TestPki,
    /// lab-01's client certificate.
    #[allow(dead_code)]
    pub ident: Identity,
    pub receiver: Option<Receiver>,
    #[allow(dead_code)]
    pub opts: ReceiverOptions,
    #[allow(dead_code)]
    pub cfg: ShipperSetup,
    shipper_extra: String,
}

/// How a `Lab` differs from the defaults.
#[allow(dead_code)]
pub struct LabBuilder {
    name: String,
    receiver_extra: String,
    shipper_extra: String,
    receiver_env: Vec<(String, String)>,
}

impl LabBuilder {
    /// Lines appended to receiver.toml before `[hosts]`.
    #[allow(dead_code)]
    pub fn receiver_extra(mut self, toml: &str) -> LabBuilder {
        self.receiver_extra = toml.to_owned();
        self
    }

    /// Lines appended to the shipper's config.
    #[allow(dead_code)]
    pub fn shipper_extra(mut self, toml: &str) -> LabBuilder {
        self.shipper_extra = toml.to_owned();
        self
    }

    /// An environment variable for the receiver process (fault injection).
    #[allow(dead_code)]
    pub fn receiver_env(mut self, key: &str, value: &str) -> LabBuilder {
        self.receiver_env.push((key.to_owned(), value.to_owned()));
        self
    }

    #[allow(dead_code)]
    pub fn start(self) -> Lab {
        let dir = TempDir::new(&self.name);
        let pki = TestPki::new(&dir.join("pki"));
        let ident = pki.client("lab-01");
        let mut opts = ReceiverOptions::tls(&pki, &dir.join("store"));
        opts.extra = self.receiver_extra;
        let env: Vec<(&str, &str)> = self
            .receiver_env
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        let receiver = start_receiver(dir.path(), &opts, &env);
        let cfg = shipper_config(
            dir.path(),
            "lab-01",
            &receiver.url(),
            &pki.ca_file,
            Some(&ident),
            TOKEN_A,
            &self.shipper_extra,
        );
        Lab {
            dir,
            pki,
            ident,
            receiver: Some(receiver),
            opts,
            cfg,
            shipper_extra: self.shipper_extra,
        }
    }
}

#[allow(dead_code)]
fn start_receiver(dir: &Path, opts: &ReceiverOptions, env: &[(&str, &str)]) -> Receiver {
    let config = dir.join("receiver.toml");
    write_file(&config, &opts.render(), 0o644);
    Receiver::start_with_config(&config, true, false, env)
}

impl Lab {
    pub fn build(name: &str) -> LabBuilder {
        LabBuilder {
            name: name.to_owned(),
            receiver_extra: String::new(),
            shipper_extra: String::new(),
            receiver_env: Vec::new(),
        }
    }

    #[allow(dead_code)]
    pub fn new(name: &str) -> Lab {
        Lab::build(name).start()
    }

    pub fn receiver(&self) -> &Receiver {
        self.receiver.as_ref().expect("receiver running")
    }

    /// Stops (kill -9) the receiver, if any, and starts a new one on the
    /// same store with `env`; the shipper's config is pointed at its port.
    #[allow(dead_code)]
    pub fn restart_receiver(&mut self, env: &[(&str, &str)]) {
        self.receiver = None;
        let r = start_receiver(self.dir.path(), &self.opts, env);
        self.cfg = shipper_config(
            self.dir.path(),
            "lab-01",
            &r.url(),
            &self.pki.ca_file,
            Some(&self.ident),
            TOKEN_A,
            &self.shipper_extra,
        );
        self.receiver = Some(r);
    }

    /// A path under the shipper's data_dir.
    #[allow(dead_code)]
    pub fn data(&self, p: &str) -> PathBuf {
        self.cfg.data_dir.join(p)
    }

    pub fn store(&self) -> PathBuf {
        self.dir.join("store")
    }

    /// The receiver's directory for lab-01.
    pub fn host_dir(&self) -> PathBuf {
        self.store().join("lab-01")
    }

    /// Where the receiver keeps lab-01's episode `id`.
    #[allow(dead_code)]
    pub fn stored(&self, id: &str) -> PathBuf {
        self.host_dir().join(format!("{id}.tar.zst"))
    }

    /// The receiver's upload temps for lab-01 (in flight, or a crash's).
    #[allow(dead_code)]
    pub fn temps(&self) -> Vec<String> {
        names(&self.host_dir())
            .into_iter()
            .filter(|n| n.starts_with(".upload-"))
            .collect()
    }

    /// A finished episode (with done.marker) in lab-01's episodes/.
    #[allow(dead_code)]
    pub fn episode(&self, id: &str, bytes: u64, seed: u64) -> PathBuf {
        make_episode(&self.cfg.data_dir, id, bytes, seed, true)
    }

    /// A copy of the shipper's config with one substitution, as another file.
    #[allow(dead_code)]
    pub fn variant(&self, name: &str, from: &str, to: &str) -> PathBuf {
        let text = std::fs::read_to_string(&self.cfg.config).unwrap();
        assert!(text.contains(from), "{from} not in config");
        let path = self.dir.join(&format!("{name}.toml"));
        write_file(&path, &text.replacen(from, to, 1), 0o644);
        path
    }

    /// One `--once` pass to completion.
    #[allow(dead_code)]
    pub fn once(&self) -> Output {
        self.once_env(&[])
    }

    #[allow(dead_code)]
    pub fn once_env(&self, env: &[(&str, &str)]) -> Output {
        shipper_env(&self.cfg.config, &["--once"], env)
    }

    /// A `--once` pass left running, its output piped.
    #[allow(dead_code)]
    pub fn spawn_once(&self) -> Child {
        spawn_shipper(&self.cfg.config, &["--once"])
    }

    /// `--ping` as lab-01 with this certificate (or none) and token: the
    /// shipper's config is rewritten for it.
    #[allow(dead_code)]
    pub fn ping_as(&self, ident: Option<&Identity>, token: &str) -> Output {
        let cfg = shipper_config(
            self.dir.path(),
            "lab-01",
            &self.receiver().url(),
            &self.pki.ca_file,
            ident,
            token,
            "",
        );
        shipper(&cfg.config, &["--ping"])
    }

    /// Lines of the receiver's log that contain `needle`.
    #[allow(dead_code)]
    pub fn logged(&self, needle: &str) -> usize {
        self.receiver()
            .log
            .lock()
            .unwrap()
            .iter()
            .filter(|l| l.contains(needle))
            .count()
    }

    /// PUTs the receiver has logged so far. A ping goes first, and its
    /// line is awaited: the receiver logs before answering and its log is
    /// one ordered pipe, so every earlier request's line is in by then.
    #[allow(dead_code)]
    pub fn puts_logged(&self) -> usize {
        let before = self.logged("POST /v1/ping 200");
        assert_exit(&shipper(&self.cfg.config, &["--ping"]), 0);
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while self.logged("POST /v1/ping 200") == before {
            assert!(std::time::Instant::now() < deadline, "ping never logged");
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        self.logged(" PUT /v1/episodes/")
    }

    /// An episode of `bytes` random (incompressible) bytes in one file, so
    /// its tarball is about that size.
    #[allow(dead_code)]
    pub fn incompressible(&self, id: &str, bytes: usize, seed: u64) {
        let ep = self.data(&format!("episodes/{id}"));
        std::fs::create_dir_all(&ep).unwrap();
        let mut x = seed | 1;
        let mut data = vec![0u8; bytes];
        for chunk in data.chunks_mut(8) {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let b = x.to_le_bytes();
            chunk.copy_from_slice(&b[..chunk.len()]);
        }
        std::fs::write(ep.join("frames.bin"), data).unwrap();
        std::fs::write(ep.join("done.marker"), b"").unwrap();
    }

    /// The shipper's config pointed at `url` (a forwarder) instead of the
    /// receiver, as another file.
    #[allow(dead_code)]
    pub fn through(&self, name: &str, url: &str) -> PathBuf {
        let port = self.receiver().https.unwrap().port();
        self.variant(
            name,
            &format!("https://localhost:{port}\""),
            &format!("{url}\""),
        )
    }

    /// Packs without uploading (the receiver's port is closed for this
    /// pass): `outbox/<id>.tar.zst`'s size.
    #[allow(dead_code)]
    pub fn pack_only(&self, id: &str) -> u64 {
        let port = self.receiver().https.unwrap().port();
        let dead = self.variant("dead", &format!(":{port}\""), &format!(":{}\"", port + 1));
        assert_exit(&shipper(&dead, &["--once"]), 75);
        std::fs::metadata(self.data(&format!("outbox/{id}.tar.zst")))
            .unwrap()
            .len()
    }

    /// The stored tarball, extracted with GNU tar and the zstd CLI, is the
    /// episode now in shipped/.
    #[allow(dead_code)]
    pub fn assert_stored_is_shipped(&self, id: &str) {
        let x = self.dir.join(&format!("extract-{id}"));
        extract(&self.stored(id), &x);
        assert_eq!(
            snapshot(&x.join(id), Mtimes::Seconds),
            snapshot(&self.data(&format!("shipped/{id}")), Mtimes::Seconds),
            "{id}: the stored tarball is not the episode"
        );
    }
}
