//! The load tool (issue 12): its help names every option with its default, and it measures
//! a node that is already running (`--url`, `--pid`), with progress on stderr.

mod common;

use std::process::Command;

use common::*;

#[test]
fn the_help_describes_every_option() {
    let output = Command::new(env!("CARGO_BIN_EXE_kuzzle-load"))
        .arg("--help")
        .output()
        .unwrap();
    assert!(output.status.success());
    let help = String::from_utf8_lossy(&output.stdout);
    for option in [
        "--binary",
        "--url",
        "--pid",
        "--connections N",
        "--clients C",
        "--requests R",
        "--subscribers S",
        "--publishes P",
        "--publish-interval-ms",
        "--document-bytes",
        "--compression",
        "--cluster",
    ] {
        assert!(help.contains(option), "{option} missing from:\n{help}");
    }
    assert!(help.matches("(default: ").count() >= 9, "{help}");
}

#[test]
fn it_measures_a_node_already_running() {
    let dir = tempfile::tempdir().unwrap();
    let (mut child, addr, _log) = spawn_binary(dir.path(), &[]);
    let output = Command::new(env!("CARGO_BIN_EXE_kuzzle-load"))
        .args([
            "--url",
            &format!("ws://{addr}"),
            "--pid",
            &child.id().to_string(),
        ])
        .args(["--connections", "40", "--clients", "2", "--requests", "10"])
        .args(["--subscribers", "5", "--publishes", "8"])
        .output()
        .unwrap();
    send_signal(&child, "TERM");
    wait_exit(&mut child);
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stdout}\n{stderr}");
    assert!(
        stdout.contains(&format!(
            "# kuzzle-load against {addr} (a node already running)"
        )),
        "{stdout}"
    );
    assert!(
        stdout.contains("| 40 | 40 |"),
        "every idle connection held: {stdout}"
    );
    assert!(
        stdout.contains("| 5 | 8 | off |"),
        "the fan-out row: {stdout}"
    );
    assert!(
        !stdout.contains("n/a"),
        "--pid gives memory and CPU: {stdout}"
    );
    assert!(
        stderr.contains("kuzzle-load: 40 / 40 idle connections open"),
        "{stderr}"
    );
    assert!(stderr.contains("kuzzle-load: 8 / 8 publishes"), "{stderr}");
}
