//! What a configuration error says (PROTOCOL.md §8.3): the expected value in words rather
//! than in Rust types, and where the key was set (a file and its line, or a variable).

use serde_json::Value;

/// Rewrites a deserialiser's message ("invalid type: string \"x\", expected u16") into what
/// the key must be ("must be a port number from 0 to 65535"). Messages of our own, and
/// those without a Rust type in them, are kept.
pub fn in_words(path: &str, message: &str) -> String {
    let Some(at) = message.rfind("expected ") else {
        return message.to_owned();
    };
    if !(message.starts_with("invalid type: ") || message.starts_with("invalid value: ")) {
        return message.to_owned();
    }
    let expected = &message[at + "expected ".len()..];
    let port = path.to_ascii_lowercase().ends_with("port");
    let words = match expected {
        "u16" if port => "a port number from 0 to 65535",
        "u8" => "a whole number from 0 to 255",
        "u16" => "a whole number from 0 to 65535",
        "u32" => "a whole number from 0 to 4294967295",
        "u64" | "usize" => "a whole number, 0 or more",
        "i8" | "i16" | "i32" | "i64" | "isize" => "a whole number",
        "f32" | "f64" => "a number",
        "a boolean" => "true or false",
        "a string" => "a string",
        "a sequence" => "an array",
        "a map" => "an object",
        other if other.starts_with("struct ") => "an object",
        _ => return message.to_owned(),
    };
    format!("must be {words}")
}

/// How a text reads where a number or a boolean is expected, as the environment's values
/// do (PROTOCOL.md §8.4): `true`, `false`, integers and decimals; `None` for other text.
pub fn scalar(raw: &str) -> Option<Value> {
    match raw {
        "true" => Some(Value::Bool(true)),
        "false" => Some(Value::Bool(false)),
        _ if is_integer(raw) => raw.parse::<i64>().ok().map(Value::from),
        _ if is_float(raw) => raw
            .parse::<f64>()
            .ok()
            .and_then(serde_json::Number::from_f64)
            .map(Value::Number),
        _ => None,
    }
}

fn is_integer(s: &str) -> bool {
    let digits = s.strip_prefix(['+', '-']).unwrap_or(s);
    !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit())
}

fn is_float(s: &str) -> bool {
    let digits = s.strip_prefix(['+', '-']).unwrap_or(s);
    match digits.split_once('.') {
        Some((int, frac)) => is_integer(int) && is_integer(frac) && !frac.starts_with(['+', '-']),
        None => false,
    }
}

/// Gives a file's text values the environment's reading: where the defaults hold a number
/// or a boolean (or a null that is not a string key), a text such as `"7600"` or `"true"`
/// becomes that number or boolean, so that a file and a variable accept the same spellings.
pub fn like_environment(tree: &mut Value, defaults: &Value, string_keys: &[String]) {
    fn walk(tree: &mut Value, defaults: &Value, path: &mut Vec<String>, strings: &[String]) {
        let (Value::Object(tree), Value::Object(defaults)) = (tree, defaults) else {
            return;
        };
        for (key, value) in tree.iter_mut() {
            let Some(default) = defaults.get(key) else {
                continue;
            };
            path.push(key.clone());
            match (value, default) {
                (value @ Value::Object(_), Value::Object(_)) => walk(value, default, path, strings),
                (value @ Value::String(_), Value::Number(_) | Value::Bool(_) | Value::Null) => {
                    let dotted = path.join(".");
                    let text_key =
                        strings.contains(&dotted) || key.to_ascii_lowercase().ends_with("version");
                    if let (false, Value::String(raw)) = (text_key, &*value)
                        && let Some(read) = scalar(raw)
                    {
                        *value = read;
                    }
                }
                _ => {}
            }
            path.pop();
        }
    }
    walk(tree, defaults, &mut Vec::new(), string_keys);
}

/// The line of a kuzzlerc text (JSON with comments, JSON5 keys) where the dotted key is
/// set, when it is set outside arrays; best effort, for messages only.
pub fn line_of(text: &str, key: &str) -> Option<usize> {
    let target: Vec<&str> = key.split('.').collect();
    // The key of each open object or array; `None` for an array's items.
    let mut open: Vec<Option<String>> = Vec::new();
    let mut last: Option<(String, usize)> = None;
    let mut next_key: Option<String> = None;
    let mut line = 1;
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\n' => line += 1,
            '"' | '\'' => {
                let (start, mut word) = (line, String::new());
                while let Some(d) = chars.next() {
                    match d {
                        '\\' => word.extend(chars.next()),
                        d if d == c => break,
                        d => {
                            line += usize::from(d == '\n');
                            word.push(d);
                        }
                    }
                }
                last = Some((word, start));
            }
            '/' if chars.peek() == Some(&'/') => {
                for d in chars.by_ref() {
                    if d == '\n' || d == '\r' {
                        line += usize::from(d == '\n');
                        break;
                    }
                }
            }
            '/' if chars.peek() == Some(&'*') => {
                chars.next();
                let mut previous = ' ';
                for d in chars.by_ref() {
                    line += usize::from(d == '\n');
                    if previous == '*' && d == '/' {
                        break;
                    }
                    previous = d;
                }
            }
            ':' => {
                if let Some((word, at)) = last.take() {
                    let keys: Option<Vec<&str>> = open.iter().map(|k| k.as_deref()).collect();
                    if let Some(mut keys) = keys {
                        keys.retain(|k| !k.is_empty());
                        keys.push(&word);
                        if keys == target {
                            return Some(at);
                        }
                    }
                    next_key = Some(word);
                }
            }
            '{' | '[' => {
                // An object's key, or none for an array's item; the root is "".
                let key = next_key
                    .take()
                    .or_else(|| open.is_empty().then(String::new));
                open.push(key);
                if c == '[' {
                    open.push(None);
                }
            }
            '}' | ']' => {
                open.pop();
                if c == ']' {
                    open.pop();
                }
                next_key = None;
            }
            ',' => {
                next_key = None;
                last = None;
            }
            c if c.is_alphanumeric() || c == '_' || c == '$' => {
                let mut word = String::from(c);
                while let Some(&d) = chars.peek() {
                    if !(d.is_alphanumeric() || d == '_' || d == '$') {
                        break;
                    }
                    word.push(d);
                    chars.next();
                }
                last = Some((word, line));
            }
            _ => {}
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn rust_types_become_words() {
        let said = |path, message| in_words(path, message);
        assert_eq!(
            said(
                "server.port",
                "invalid type: string \"seven\", expected u16"
            ),
            "must be a port number from 0 to 65535"
        );
        assert_eq!(
            said(
                "limits.loginsPerSecond",
                "invalid value: integer `-1`, expected u32"
            ),
            "must be a whole number from 0 to 4294967295"
        );
        assert_eq!(
            said(
                "http.cookieAuthentication",
                "invalid type: integer `2`, expected a boolean"
            ),
            "must be true or false"
        );
        assert_eq!(
            said(
                "x",
                "unknown variant `mongo`, expected `embedded` or `redis`"
            ),
            "unknown variant `mongo`, expected `embedded` or `redis`"
        );
    }

    #[test]
    fn texts_read_as_the_environment_reads_them() {
        let defaults = json!({"server": {"port": 7512, "host": "0.0.0.0", "strict": false,
            "metrics": {"port": null}, "apiVersion": 2}, "secret": null});
        let mut tree = json!({"server": {"port": "7600", "host": "10", "strict": "true",
            "metrics": {"port": "9100"}, "apiVersion": "2"}, "secret": "1234"});
        like_environment(&mut tree, &defaults, &["secret".to_owned()]);
        assert_eq!(
            tree,
            json!({"server": {"port": 7600, "host": "10", "strict": true,
                "metrics": {"port": 9100}, "apiVersion": "2"}, "secret": "1234"})
        );
        assert_eq!(scalar("1."), None);
        assert_eq!(scalar("-3"), Some(json!(-3)));
        assert_eq!(scalar("2.5"), Some(json!(2.5)));
    }

    #[test]
    fn the_line_of_a_key() {
        let text = "// a comment: {\n{\n  server: {\n    \"host\": \"127.0.0.1\", /* port: 1 */\n    'port': 'seven',\n  },\n  list: [{port: 1}],\n  port: 2\n}\n";
        assert_eq!(line_of(text, "server.port"), Some(5));
        assert_eq!(line_of(text, "server.host"), Some(4));
        assert_eq!(line_of(text, "port"), Some(8));
        assert_eq!(line_of(text, "server.missing"), None);
    }
}
