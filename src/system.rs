//! What the node reports about its host in `server:info`, read from /proc (Linux).
//! Elsewhere the values are empty or zero.

use serde_json::{Value, json};

fn read(path: &str) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

fn meminfo_bytes(text: &str, key: &str) -> u64 {
    text.lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|rest| {
            rest.trim()
                .trim_end_matches("kB")
                .trim()
                .parse::<u64>()
                .ok()
        })
        .map_or(0, |kb| kb * 1024)
}

/// Resident set size of this process, in bytes.
pub fn resident_memory() -> u64 {
    meminfo_bytes(&read("/proc/self/status"), "VmRSS:")
}

pub fn memory() -> Value {
    let info = read("/proc/meminfo");
    json!({"free": meminfo_bytes(&info, "MemAvailable:"), "total": meminfo_bytes(&info, "MemTotal:")})
}

pub fn cpus() -> Value {
    let info = read("/proc/cpuinfo");
    let field = |block: &str, name: &str| {
        block
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_once(':'))
            .map(|(_, v)| v.trim().to_owned())
    };
    let cpus: Vec<Value> = info
        .split("\n\n")
        .filter(|block| block.contains("processor"))
        .map(|block| {
            let speed = field(block, "cpu MHz")
                .and_then(|s| s.parse::<f64>().ok())
                .map_or(0, |mhz| mhz.round() as u64);
            json!({"model": field(block, "model name").unwrap_or_default(), "speed": speed})
        })
        .collect();
    Value::Array(cpus)
}
