//! Makes synthetic robot-lab episodes: `DATA_DIR/episodes/ep-<seed>-<i>/`.
//!
//! A thin CLI over `tests/common/episodes.rs`, shared with the integration
//! tests so the demo, the benchmarks and the tests make the same data.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

#[path = "../tests/common/episodes.rs"]
mod episodes;

const HELP: &str = "\
Usage: mkepisodes DATA_DIR COUNT MIB [--seed N] [--no-marker]

Creates COUNT episodes of MIB MiB each (fractions allowed) under
DATA_DIR/episodes/, named ep-<seed:03>-<i:05>, each with a done.marker
unless --no-marker. The same seed gives the same contents.

Options:
  --seed N       random seed (default 1)
  --no-marker    do not write done.marker (episodes still being recorded)
  -h, --help     print this help
";

struct Args {
    data_dir: PathBuf,
    count: u64,
    bytes: u64,
    seed: u64,
    marker: bool,
}

fn parse_args() -> Result<Option<Args>, lexopt::Error> {
    use lexopt::prelude::*;

    let mut positional = Vec::new();
    let mut seed = 1u64;
    let mut marker = true;
    let mut parser = lexopt::Parser::from_env();
    while let Some(arg) = parser.next()? {
        match arg {
            Long("seed") => seed = parser.value()?.parse()?,
            Long("no-marker") => marker = false,
            Short('h') | Long("help") => return Ok(None),
            Value(v) if positional.len() < 3 => positional.push(v),
            _ => return Err(arg.unexpected()),
        }
    }
    let [data_dir, count, mib] = <[_; 3]>::try_from(positional)
        .map_err(|_| lexopt::Error::from("expected DATA_DIR COUNT MIB (see --help)"))?;
    let count: u64 = count.parse()?;
    let mib: f64 = mib.parse()?;
    if !(mib.is_finite() && mib >= 0.0) {
        return Err(format!("MIB must be a non-negative number, got {mib}").into());
    }
    Ok(Some(Args {
        data_dir: PathBuf::from(data_dir),
        count,
        bytes: (mib * 1024.0 * 1024.0) as u64,
        seed,
        marker,
    }))
}

fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(Some(args)) => args,
        Ok(None) => {
            print!("{HELP}");
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("mkepisodes: {e}");
            return ExitCode::from(2);
        }
    };
    let start = Instant::now();
    for i in 0..args.count {
        let id = format!("ep-{:03}-{:05}", args.seed, i);
        // Mixing the index in is not needed (the generator folds the id into
        // the seed), so `--seed` alone reproduces the whole set.
        let dir = episodes::make_episode(&args.data_dir, &id, args.bytes, args.seed, args.marker);
        println!("{}", dir.display());
    }
    eprintln!(
        "mkepisodes: {} episode(s) of {} bytes in {:.1}s",
        args.count,
        args.bytes,
        start.elapsed().as_secs_f64()
    );
    ExitCode::SUCCESS
}
