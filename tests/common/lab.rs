//! `Lab`: the fixture most end-to-end tests start from.

use std::path::{Path, PathBuf};

use super::episodes::make_episode;
use super::*;

/// One lab for a test: a temp dir, a PKI, a real receiver over mTLS on
/// 127.0.0.1, and host `lab-01`'s shipper configuration pointed at it.
pub struct Lab {
    pub dir: TempDir,
    pub pki: TestPki,
    pub receiver: Option<Receiver>,
    pub opts: ReceiverOptions,
    pub cfg: ShipperSetup,
}

impl Lab {
    pub fn new(name: &str) -> Lab {
        Lab::with(name, "", "")
    }

    pub fn with(name: &str, receiver_extra: &str, shipper_extra: &str) -> Lab {
        let dir = TempDir::new(name);
        let pki = TestPki::new(&dir.join("pki"));
        let mut opts = ReceiverOptions::tls(&pki, &dir.join("store"));
        opts.extra = receiver_extra.to_owned();
        let receiver = Receiver::start(dir.path(), &opts);
        let id = pki.client("lab-01");
        let cfg = shipper_config(
            dir.path(),
            "lab-01",
            &receiver.url(),
            &pki.ca_file,
            Some(&id),
            TOKEN_A,
            shipper_extra,
        );
        Lab {
            dir,
            pki,
            receiver: Some(receiver),
            opts,
            cfg,
        }
    }

    pub fn receiver(&self) -> &Receiver {
        self.receiver.as_ref().unwrap()
    }

    pub fn data(&self, p: &str) -> PathBuf {
        self.cfg.data_dir.join(p)
    }

    pub fn stored(&self, id: &str) -> PathBuf {
        self.dir.join(&format!("store/lab-01/{id}.tar.zst"))
    }

    pub fn episode(&self, id: &str, bytes: u64, seed: u64) -> PathBuf {
        make_episode(&self.cfg.data_dir, id, bytes, seed, true)
    }

    /// A copy of the shipper's config with one substitution, as another file.
    pub fn variant(&self, name: &str, from: &str, to: &str) -> PathBuf {
        let text = std::fs::read_to_string(&self.cfg.config).unwrap();
        assert!(text.contains(from), "{from} not in config");
        let path = self.dir.join(&format!("{name}.toml"));
        write_file(&path, &text.replacen(from, to, 1), 0o644);
        path
    }

    pub fn once(&self) -> std::process::Output {
        shipper(&self.cfg.config, &["--once"])
    }

    /// PUTs the receiver has logged so far. A ping goes first, and its
    /// line is awaited: the receiver logs before answering and its log is
    /// one ordered pipe, so every earlier request's line is in by then.
    pub fn puts_logged(&self) -> usize {
        let r = self.receiver();
        let pings = || {
            r.log
                .lock()
                .unwrap()
                .iter()
                .filter(|l| l.contains("POST /v1/ping 200"))
                .count()
        };
        let before = pings();
        assert_exit(&shipper(&self.cfg.config, &["--ping"]), 0);
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while pings() == before {
            assert!(std::time::Instant::now() < deadline, "ping never logged");
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        r.log
            .lock()
            .unwrap()
            .iter()
            .filter(|l| l.contains(" PUT /v1/episodes/"))
            .count()
    }
}

/// File names in a directory, sorted; empty if it does not exist.
pub fn names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}
