//! The load tool: its help names every option with its default, and it measures a node
//! that is already running (`--url`, `--pid`) through every scenario, with progress on
//! stderr and one JSON object on stdout with `--json`.

mod common;

use std::process::Command;

use common::*;
use serde_json::Value;

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
        "--dialect",
        "--scenarios",
        "--connections N",
        "--sources K",
        "--clients C",
        "--requests R",
        "--subscribers S",
        "--publishes P",
        "--rate R",
        "--burst B",
        "--window W",
        "--document-bytes",
        "--compression",
        "--cycles",
        "--churn-sockets",
        "--threads",
        "--pin",
        "--json",
        "--cluster",
        "--redis-cluster",
    ] {
        assert!(help.contains(option), "{option} missing from:\n{help}");
    }
    assert!(help.matches("(default: ").count() >= 19, "{help}");
}

#[test]
fn bad_options_are_refused() {
    for args in [
        &["--scenarios", "idle,nap"][..],
        &["--dialect", "mqtt"],
        &["--dialect", "ws"],
        &["--rate", "0"],
    ] {
        let output = Command::new(env!("CARGO_BIN_EXE_kuzzle-load"))
            .args(args)
            .output()
            .unwrap();
        assert_eq!(output.status.code(), Some(2), "{args:?}");
        assert!(String::from_utf8_lossy(&output.stderr).starts_with("kuzzle-load: "));
    }
}

#[test]
fn it_measures_a_node_already_running_through_every_scenario() {
    let dir = tempfile::tempdir().unwrap();
    let (mut child, addr, _log) = spawn_binary(dir.path(), &[]);
    let output = Command::new(env!("CARGO_BIN_EXE_kuzzle-load"))
        .args([
            "--url",
            &format!("ws://{addr}"),
            "--pid",
            &child.id().to_string(),
            "--json",
        ])
        .args(["--connections", "40", "--sources", "3"])
        .args(["--clients", "2", "--requests", "10"])
        .args(["--subscribers", "5", "--publishes", "8", "--rate", "200"])
        .args(["--burst", "12", "--window", "4"])
        .args(["--cycles", "2", "--churn-sockets", "10"])
        .output()
        .unwrap();
    send_signal(&child, "TERM");
    wait_exit(&mut child);
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stdout}\n{stderr}");
    let results: Value = serde_json::from_str(&stdout).expect("one JSON object");
    assert_eq!(results["dialect"], "kuzzle");
    assert_eq!(results["server"], addr.to_string());
    let idle = &results["idle"];
    assert_eq!(idle["sockets"], 40);
    assert_eq!(idle["answering"], idle["sampled"], "{idle}");
    assert!(idle["kib_per_socket"].as_f64().unwrap() > 0.0, "{idle}");
    assert_eq!(results["requests"]["requests"], 20);
    for (scenario, publishes) in [("fanout", 8), ("burst", 12)] {
        let figures = &results[scenario];
        assert_eq!(figures["deliveries"], 5 * publishes, "{figures}");
        assert!(figures["cpu_us_per_delivery"].is_number(), "{figures}");
        assert!(
            figures["first_p50_ms"].as_f64() <= figures["p50_ms"].as_f64(),
            "{figures}"
        );
    }
    assert_eq!(results["churn"]["cycles"], 2);
    assert!(
        stderr.contains("kuzzle-load: 40 / 40 idle sockets open"),
        "{stderr}"
    );
    assert!(stderr.contains("kuzzle-load: 8 / 8 publishes"), "{stderr}");
}

/// `--redis-cluster`: two nodes on a Redis Cluster it starts; every publish delivered, one
/// SPUBLISH each, each master's CPU, and the spread of 120 collections' channels.
#[test]
fn it_measures_two_nodes_on_a_redis_cluster() {
    let output = Command::new(env!("CARGO_BIN_EXE_kuzzle-load"))
        .args(["--redis-cluster", "--json"])
        .args(["--subscribers", "5", "--publishes", "20", "--rate", "200"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stdout}\n{stderr}");
    let results: Value = serde_json::from_str(&stdout).expect("one JSON object");
    for phase in ["same_node", "cross_node"] {
        let figures = &results[phase];
        assert_eq!(figures["deliveries"], 100, "{figures}");
        assert_eq!(figures["redis_publish_per_publish"], 1.0, "{figures}");
        assert_eq!(
            figures["redis_cpu_ms_per_1000_publishes"]
                .as_array()
                .map(Vec::len),
            Some(3),
            "{figures}"
        );
    }
    let spread = &results["spread"]["channels_per_master"];
    let channels: Vec<u64> = spread
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_u64)
        .collect();
    assert_eq!(channels.len(), 3, "{spread}");
    assert_eq!(channels.iter().sum::<u64>(), 120, "{spread}");
}
