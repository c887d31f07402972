use std::path::PathBuf;
use std::process::ExitCode;

use kuzzle_rt::config::{self, ConfigSources};

const USAGE: &str = "usage: kuzzle-rt [--config FILE]

Starts one kuzzle-rt node. Configuration comes from kuzzlerc files and kuzzle_*
environment variables (see the README); --config names one more file, read last.";

fn parse_args() -> Result<Option<PathBuf>, String> {
    let mut args = std::env::args().skip(1);
    let mut config = None;
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "-h" | "--help" => {
                println!("{USAGE}");
                std::process::exit(0);
            }
            "-V" | "--version" => {
                println!("kuzzle-rt {}", env!("CARGO_PKG_VERSION"));
                std::process::exit(0);
            }
            "--config" => {
                config = Some(PathBuf::from(
                    args.next().ok_or("--config needs a file name")?,
                ))
            }
            other => match other.strip_prefix("--config=") {
                Some(path) => config = Some(PathBuf::from(path)),
                None => return Err(format!("unknown argument {other:?}\n\n{USAGE}")),
            },
        }
    }
    Ok(config)
}

/// Every socket is a descriptor: the soft limit (often 1,024) is raised to the hard one,
/// and both are logged, so that the number of clients a node can hold is known.
fn raise_open_files_limit() {
    let before = rlimit::getrlimit(rlimit::Resource::NOFILE);
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(soft) => {
            let hard = before.map_or(soft, |(_, hard)| hard);
            log::info!("open files: soft limit {soft} (hard limit {hard})");
        }
        Err(error) => log::warn!("open files: cannot raise the soft limit: {error}"),
    }
}

fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    let config_file = match parse_args() {
        Ok(file) => file,
        Err(message) => {
            eprintln!("{message}");
            return ExitCode::from(2);
        }
    };
    let settings = match config::load(&ConfigSources::from_process(config_file)) {
        Ok(settings) => settings,
        Err(error) => {
            eprintln!("{error}");
            return ExitCode::from(1);
        }
    };
    for warning in config::warnings(&settings) {
        log::warn!("{warning}");
    }
    raise_open_files_limit();
    match actix_rt::System::new().block_on(kuzzle_rt::server::run(settings)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("kuzzle-rt: {error}");
            ExitCode::from(1)
        }
    }
}
