//! Reads the configuration sources in their order of precedence (PROTOCOL.md §8.1)
//! and turns the merged tree into validated `Settings`.

use std::fmt;
use std::path::{Path, PathBuf};

use config::{Config, File, FileFormat};
use serde_json::Value;

use super::env::KuzzleEnv;
use super::explain;
use super::settings::{NULLABLE_STRING_KEYS, Settings};
use super::unknown::KnownKeys;
use super::validate;

/// A configuration problem that stops the start; its text is the whole message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError(pub String);

impl ConfigError {
    /// `[CONFIG] <key.path>: <problem> (got <value>)`.
    pub fn key(path: &str, problem: impl fmt::Display, got: &Value) -> Self {
        ConfigError(format!("[CONFIG] {path}: {problem} (got {got})"))
    }

    /// The dotted key a `[CONFIG] <key.path>: …` message is about.
    pub fn key_path(&self) -> Option<&str> {
        let rest = self.0.strip_prefix("[CONFIG] ")?;
        let (key, _) = rest.split_once(": ")?;
        (!key.is_empty() && !key.contains(' ')).then_some(key)
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ConfigError {}

/// Where the configuration comes from. Tests build their own; `from_process` reads reality.
#[derive(Debug, Clone)]
pub struct ConfigSources {
    pub etc_dir: PathBuf,
    pub home: Option<PathBuf>,
    pub cwd: PathBuf,
    pub env: Vec<(String, String)>,
    /// The `--config FILE` command-line option.
    pub config_arg: Option<PathBuf>,
}

impl ConfigSources {
    pub fn from_process(config_arg: Option<PathBuf>) -> Self {
        ConfigSources {
            etc_dir: PathBuf::from("/etc"),
            home: std::env::var_os("HOME").map(PathBuf::from),
            cwd: std::env::current_dir().unwrap_or_else(|_| PathBuf::from(".")),
            env: std::env::vars().collect(),
            config_arg,
        }
    }

    /// The candidate files, lowest precedence first, each with what named it when it
    /// must exist (`--config`, `$kuzzle_config`); the others are read when present.
    pub fn files_named(&self) -> Vec<(PathBuf, Option<&'static str>)> {
        let mut files: Vec<(PathBuf, Option<&'static str>)> =
            self.files().into_iter().map(|f| (f, None)).collect();
        if let Some((_, path)) = self.env.iter().find(|(k, _)| k == "kuzzle_config") {
            files.push((PathBuf::from(path), Some("$kuzzle_config")));
        }
        if let Some(path) = &self.config_arg {
            files.push((path.clone(), Some("--config")));
        }
        files
    }

    /// The files read when present, lowest precedence first.
    pub fn files(&self) -> Vec<PathBuf> {
        let mut files = vec![
            self.etc_dir.join("kuzzle/config"),
            self.etc_dir.join("kuzzlerc"),
        ];
        if let Some(home) = &self.home {
            for rel in [
                ".config/kuzzle/config",
                ".config/kuzzle",
                ".kuzzle/config",
                ".kuzzlerc",
            ] {
                files.push(home.join(rel));
            }
        }
        if let Some(found) = self
            .cwd
            .ancestors()
            .map(|dir| dir.join(".kuzzlerc"))
            .find(|p| p.is_file())
        {
            files.push(found);
        }
        files
    }
}

/// The settings, and what the start should say about them.
#[derive(Debug)]
pub struct Loaded {
    pub settings: Settings,
    /// The files read, lowest precedence first.
    pub files: Vec<PathBuf>,
    /// One message per key that no setting reads, naming where it came from.
    pub unknown_keys: Vec<String>,
}

/// Loads, merges, deserialises and validates every source.
pub fn load(sources: &ConfigSources) -> Result<Settings, ConfigError> {
    load_checked(sources).map(|loaded| loaded.settings)
}

/// `load`, with the files read and the unknown keys found on the way.
pub fn load_checked(sources: &ConfigSources) -> Result<Loaded, ConfigError> {
    let defaults =
        serde_json::to_value(Settings::default()).map_err(|e| ConfigError(e.to_string()))?;
    let known = KnownKeys::of(&defaults);
    let mut builder = Config::builder().add_source(json_source(&defaults)?);
    let mut files = Vec::new();
    // Each file's text and tree, to say where a key in error was set.
    let mut texts = Vec::new();
    let mut unknown_keys = Vec::new();
    for (path, named_by) in sources.files_named() {
        if let Some(named_by) = named_by
            && !path.is_file()
        {
            return Err(ConfigError(format!(
                "[CONFIG] {}: no such configuration file (named by {named_by})",
                path.display()
            )));
        }
        if let Some((text, tree)) = read_file(&path)? {
            let origin = format!("in {}", path.display());
            unknown_keys.extend(
                known
                    .unknown_in(&tree)
                    .iter()
                    .map(|key| known.describe(key, &origin)),
            );
            builder = builder.add_source(File::from_str(&text, FileFormat::Json5));
            texts.push((path.clone(), text, tree));
            files.push(path);
        }
    }
    let string_keys = string_key_paths(&defaults);
    let env = KuzzleEnv::new(sources.env.clone(), string_keys.clone());
    let variables = env.key_paths();
    for (variable, path) in &variables {
        if !known.knows(path) {
            unknown_keys.push(known.describe(path, &format!("from {variable}")));
        }
    }
    builder = builder.add_source(env);
    let mut merged: Value = builder
        .build()
        .and_then(Config::try_deserialize)
        .map_err(|e| ConfigError(format!("[CONFIG] {e}")))?;
    // The environment's values were read already; the files' texts read the same way.
    explain::like_environment(&mut merged, &defaults, &string_keys);
    let settings = from_json(merged).map_err(|error| {
        let Some(key) = error.key_path() else {
            return error;
        };
        let set_by = variables
            .iter()
            .rev()
            .find(|(_, path)| key == *path || key.starts_with(&format!("{path}.")))
            .map(|(variable, _)| format!("set by {variable}"))
            .or_else(|| {
                texts.iter().rev().find_map(|(path, text, tree)| {
                    lookup(tree, key).map(|_| match explain::line_of(text, key) {
                        Some(line) => format!("set in {}, line {line}", path.display()),
                        None => format!("set in {}", path.display()),
                    })
                })
            });
        match set_by {
            Some(set_by) => ConfigError(format!("{error}; {set_by}")),
            None => error,
        }
    })?;
    Ok(Loaded {
        settings,
        files,
        unknown_keys,
    })
}

/// Deserialises a merged tree and validates it.
pub fn from_json(merged: Value) -> Result<Settings, ConfigError> {
    let settings: Settings = serde_path_to_error::deserialize(&merged).map_err(|err| {
        let path = err.path().to_string();
        let got = lookup(&merged, &path).cloned().unwrap_or(Value::Null);
        ConfigError::key(
            &path,
            explain::in_words(&path, &err.into_inner().to_string()),
            &got,
        )
    })?;
    validate::validate(&settings)?;
    Ok(settings)
}

/// Deepest nesting of objects and arrays a kuzzlerc file may have. The JSON5 parser
/// recurses once per level: a file of a few thousand `[` overflowed its stack (found by
/// the `configuration` fuzz target).
const MAX_NESTING: usize = 32;

/// Parses one kuzzlerc text (JSON with comments) into a JSON tree.
pub fn parse_kuzzlerc(text: &str) -> Result<Value, ConfigError> {
    if nesting_depth(text) > MAX_NESTING {
        return Err(ConfigError(format!(
            "[CONFIG] Unable to read kuzzlerc configuration file: objects and arrays nested deeper than {MAX_NESTING} levels"
        )));
    }
    Config::builder()
        .add_source(File::from_str(text, FileFormat::Json5))
        .build()
        .and_then(Config::try_deserialize)
        .map_err(|e| {
            ConfigError(format!(
                "[CONFIG] Unable to read kuzzlerc configuration file: {}",
                first_position(&e.to_string())
            ))
        })
}

/// The JSON5 parser names the position of the error, then of each enclosing value
/// ("… at line 3 column 18 at line 2 column 13 at line 1 column 1"): the first one is
/// the error's.
fn first_position(message: &str) -> &str {
    let Some(at) = message.find(" at line ") else {
        return message;
    };
    let rest = &message[at..];
    let Some(column) = rest.find(" column ") else {
        return message;
    };
    let digits = rest[column + 8..]
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(rest.len() - column - 8);
    &message[..at + column + 8 + digits]
}

/// The deepest nesting of `{` and `[` in a JSON5 text, outside strings and comments.
fn nesting_depth(text: &str) -> usize {
    let (mut depth, mut deepest) = (0usize, 0usize);
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '{' | '[' => {
                depth += 1;
                deepest = deepest.max(depth);
            }
            '}' | ']' => depth = depth.saturating_sub(1),
            '"' | '\'' => {
                // A string: up to the same unescaped quote.
                while let Some(s) = chars.next() {
                    match s {
                        '\\' => {
                            chars.next();
                        }
                        _ if s == c => break,
                        _ => {}
                    }
                }
            }
            '/' if chars.peek() == Some(&'/') => {
                // JSON5 line terminators (a comment ending at a lone `\r` was missed once).
                for s in chars.by_ref() {
                    if matches!(s, '\n' | '\r' | '\u{2028}' | '\u{2029}') {
                        break;
                    }
                }
            }
            '/' if chars.peek() == Some(&'*') => {
                chars.next();
                let mut previous = ' ';
                for s in chars.by_ref() {
                    if previous == '*' && s == '/' {
                        break;
                    }
                    previous = s;
                }
            }
            _ => {}
        }
    }
    deepest
}

/// A file's text and tree, when it exists.
fn read_file(path: &Path) -> Result<Option<(String, Value)>, ConfigError> {
    if !path.is_file() {
        return Ok(None);
    }
    let text = std::fs::read_to_string(path).map_err(|e| {
        ConfigError(format!(
            "[CONFIG] Unable to read kuzzlerc configuration file: {}: {e}",
            path.display()
        ))
    })?;
    // Parse now, so that the message names the file.
    let tree = parse_kuzzlerc(&text).map_err(|e| {
        ConfigError(format!(
            "[CONFIG] Unable to read kuzzlerc configuration file: {}: {}",
            path.display(),
            e.0.trim_start_matches("[CONFIG] Unable to read kuzzlerc configuration file: ")
        ))
    })?;
    Ok(Some((text, tree)))
}

fn json_source(value: &Value) -> Result<File<config::FileSourceString, FileFormat>, ConfigError> {
    let text = serde_json::to_string(value).map_err(|e| ConfigError(e.to_string()))?;
    Ok(File::from_str(&text, FileFormat::Json5))
}

/// Dotted paths of every string-valued default, plus the nullable string keys.
fn string_key_paths(defaults: &Value) -> Vec<String> {
    fn walk(value: &Value, prefix: &str, out: &mut Vec<String>) {
        match value {
            Value::Object(map) => {
                for (k, v) in map {
                    let path = if prefix.is_empty() {
                        k.clone()
                    } else {
                        format!("{prefix}.{k}")
                    };
                    walk(v, &path, out);
                }
            }
            Value::String(_) => out.push(prefix.to_owned()),
            _ => {}
        }
    }
    let mut out: Vec<String> = NULLABLE_STRING_KEYS.iter().map(|s| s.to_string()).collect();
    walk(defaults, "", &mut out);
    out
}

fn lookup<'a>(root: &'a Value, dotted: &str) -> Option<&'a Value> {
    dotted
        .split('.')
        .try_fold(root, |node, segment| match node {
            Value::Object(map) => map.get(segment),
            Value::Array(items) => segment
                .trim_matches(['[', ']'])
                .parse::<usize>()
                .ok()
                .and_then(|i| items.get(i)),
            _ => None,
        })
}
