use std::path::PathBuf;
use std::process::ExitCode;

use kuzzle_rt::config::{self, ConfigSources, LogFormat};

/// mimalloc gives back what closed sockets freed (glibc's malloc kept it: see the memory
/// figures of docs/benchmarks.md); `--features system-allocator` builds with the system's for comparison.
#[cfg(not(feature = "system-allocator"))]
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Pages freed by closed sockets go back to the system at once (mimalloc's default delays
/// that by 10 ms and then only does it when the same thread allocates again, which an idle
/// worker never does), and the arena is committed as it is used rather than up front.
#[cfg(not(feature = "system-allocator"))]
#[allow(unsafe_code)]
fn tune_allocator() {
    // The values of `mi_option_e` in the bundled mimalloc 2.3 (include/mimalloc.h).
    const PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;
    const ARENA_EAGER_COMMIT: libmimalloc_sys::mi_option_t = 4;
    // SAFETY: mi_option_set only stores a value that mimalloc reads when it next needs it.
    unsafe {
        libmimalloc_sys::mi_option_set(PURGE_DELAY, 0);
        libmimalloc_sys::mi_option_set(ARENA_EAGER_COMMIT, 0);
    }
}

#[cfg(feature = "system-allocator")]
fn tune_allocator() {}

const USAGE: &str = "usage: kuzzle-rt [--config FILE] [--strict-config]

Starts one kuzzle-rt node. Configuration comes from kuzzlerc files and kuzzle_*
environment variables (see docs/configuration.md); --config names one more file, read last.
--strict-config stops the start on a configuration key that no setting reads.";

struct Args {
    config: Option<PathBuf>,
    strict_config: bool,
}

fn parse_args() -> Result<Args, String> {
    let mut args = std::env::args().skip(1);
    let mut config = None;
    let mut strict_config = false;
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
            "--strict-config" => strict_config = true,
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
    Ok(Args {
        config,
        strict_config,
    })
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

/// `RUST_LOG` chooses the levels (info by default, actix-server's own start and stop lines
/// left out: the node logs its own); `server.logs.format` the shape.
fn init_logging(format: LogFormat) {
    use std::io::Write;
    let mut builder = env_logger::Builder::from_env(
        env_logger::Env::default().default_filter_or("info,actix_server=warn"),
    );
    if format == LogFormat::Json {
        builder.format(|buf, record| {
            let line = serde_json::json!({
                "time": buf.timestamp_millis().to_string(),
                "level": record.level().as_str(),
                "target": record.target(),
                "message": record.args().to_string(),
            });
            writeln!(buf, "{line}")
        });
    }
    builder.init();
}

fn main() -> ExitCode {
    tune_allocator();
    let args = match parse_args() {
        Ok(args) => args,
        Err(message) => {
            eprintln!("{message}");
            return ExitCode::from(2);
        }
    };
    let loaded = match config::load_checked(&ConfigSources::from_process(args.config)) {
        Ok(loaded) => loaded,
        Err(error) => {
            eprintln!("{error}");
            return ExitCode::from(1);
        }
    };
    init_logging(loaded.settings.server.logs.format);
    let files: Vec<String> = loaded
        .files
        .iter()
        .map(|f| f.display().to_string())
        .collect();
    log::info!(
        "configuration: {}",
        if files.is_empty() {
            "defaults and environment only (no kuzzlerc file found)".to_owned()
        } else {
            format!("files read, last wins: {}", files.join(", "))
        }
    );
    let settings = loaded.settings;
    if args.strict_config || settings.server.strict_config {
        if !loaded.unknown_keys.is_empty() {
            for unknown in &loaded.unknown_keys {
                eprintln!("[CONFIG] {unknown}");
            }
            eprintln!(
                "[CONFIG] strict configuration: stopping (--strict-config or server.strictConfig)"
            );
            return ExitCode::from(1);
        }
    } else {
        for unknown in &loaded.unknown_keys {
            log::warn!("[CONFIG] {unknown}");
        }
    }
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
