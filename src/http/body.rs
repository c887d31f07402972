//! The HTTP transport-level steps before routing (PROTOCOL.md §2.8): content type,
//! charset, size, Content-Encoding, body parsing. Each failure is a bare error.

use std::io::Read;

use actix_web::HttpRequest;
use actix_web::http::header;
use actix_web::web::Payload;
use base64::Engine;
use bytes::{Bytes, BytesMut};
use flate2::read::{DeflateDecoder, MultiGzDecoder, ZlibDecoder};
use futures_util::StreamExt;
use serde_json::{Map, Value};

use crate::config::Settings;
use crate::protocol::errors::{self, ApiError};

/// How the body is to be parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BodyKind {
    Json,
    UrlEncoded,
    Multipart { boundary: String },
}

/// Steps 1 and 2: the media type and its charset.
pub fn content_kind(req: &HttpRequest, settings: &Settings) -> Result<BodyKind, ApiError> {
    let Some(raw) = req.headers().get(header::CONTENT_TYPE) else {
        return Ok(BodyKind::Json);
    };
    let raw = raw.to_str().unwrap_or_default();
    let mut parts = raw.split(';').map(str::trim);
    let media = parts.next().unwrap_or_default();
    let params: Vec<(String, String)> = parts
        .filter_map(|p| p.split_once('='))
        .map(|(k, v)| {
            (
                k.trim().to_ascii_lowercase(),
                v.trim().trim_matches('"').to_owned(),
            )
        })
        .collect();
    let kind = match media {
        "application/json" => BodyKind::Json,
        "application/x-www-form-urlencoded" => BodyKind::UrlEncoded,
        "multipart/form-data" => {
            let boundary = params
                .iter()
                .find(|(k, _)| k == "boundary")
                .map(|(_, v)| v.clone())
                .unwrap_or_default();
            BodyKind::Multipart { boundary }
        }
        other
            if settings
                .server
                .protocols
                .http
                .additional_content_types
                .iter()
                .any(|t| t == other) =>
        {
            BodyKind::Json
        }
        _ => return Err(ApiError::new(errors::HTTP_UNSUPPORTED_CONTENT, [media])),
    };
    if let Some((_, charset)) = params.iter().find(|(k, _)| k == "charset")
        && !charset.eq_ignore_ascii_case("utf-8")
    {
        return Err(ApiError::new(
            errors::HTTP_UNSUPPORTED_CHARSET,
            [charset.to_ascii_lowercase()],
        ));
    }
    Ok(kind)
}

fn too_large() -> ApiError {
    ApiError::plain(errors::HTTP_REQUEST_TOO_LARGE)
}

/// Step 3: reads the body, refusing it as soon as it passes `limit` bytes. A
/// `Content-Length` over the limit is refused before anything is read.
pub async fn read_body(
    req: &HttpRequest,
    mut payload: Payload,
    limit: usize,
) -> Result<Bytes, ApiError> {
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(too_large());
    }
    let mut body = BytesMut::new();
    while let Some(chunk) = payload.next().await {
        let chunk =
            chunk.map_err(|e| ApiError::new(errors::HTTP_UNEXPECTED_ERROR, [e.to_string()]))?;
        if body.len() + chunk.len() > limit {
            return Err(too_large());
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body.freeze())
}

/// Step 4: removes each Content-Encoding, last applied first; the decoded size counts too.
pub fn decode(req: &HttpRequest, body: Bytes, settings: &Settings) -> Result<Bytes, ApiError> {
    match req.headers().get(header::CONTENT_ENCODING) {
        None => Ok(body),
        Some(raw) => decode_codings(raw.to_str().unwrap_or_default(), body, settings),
    }
}

/// `decode` for the value of a `Content-Encoding` header.
pub fn decode_codings(
    content_encoding: &str,
    body: Bytes,
    settings: &Settings,
) -> Result<Bytes, ApiError> {
    let codings: Vec<String> = content_encoding
        .split(',')
        .map(|c| c.trim().to_ascii_lowercase())
        .filter(|c| !c.is_empty())
        .collect();
    let http = &settings.server.protocols.http;
    if codings.len() > http.max_encoding_layers as usize {
        return Err(ApiError::plain(errors::HTTP_TOO_MANY_ENCODINGS));
    }
    let limit = settings.server.max_request_size.as_usize();
    let mut data = body;
    for coding in codings.iter().rev() {
        if !matches!(coding.as_str(), "gzip" | "deflate" | "identity") {
            return Err(ApiError::new(
                errors::HTTP_UNSUPPORTED_COMPRESSION,
                [coding.as_str()],
            ));
        }
        if coding == "identity" {
            continue;
        }
        if !http.allow_compression {
            return Err(ApiError::plain(errors::HTTP_COMPRESSION_DISABLED));
        }
        data = if coding == "gzip" {
            // A gzip body may hold several members, one after the other (RFC 1952).
            inflate(MultiGzDecoder::new(&data[..]), limit)?
        } else {
            // HTTP's "deflate" is zlib-wrapped; some clients send raw deflate. A zlib
            // stream that inflates past the limit is too large, not to be retried raw.
            match inflate(ZlibDecoder::new(&data[..]), limit) {
                Err(error) if error.id() == Some(errors::HTTP_REQUEST_TOO_LARGE.id) => {
                    return Err(error);
                }
                Err(_) => inflate(DeflateDecoder::new(&data[..]), limit)?,
                Ok(inflated) => inflated,
            }
        };
    }
    Ok(data)
}

fn inflate(reader: impl Read, limit: usize) -> Result<Bytes, ApiError> {
    let mut out = Vec::new();
    reader
        .take(limit as u64 + 1)
        .read_to_end(&mut out)
        .map_err(|e| ApiError::new(errors::HTTP_UNEXPECTED_ERROR, [e.to_string()]))?;
    if out.len() > limit {
        return Err(too_large());
    }
    Ok(Bytes::from(out))
}

/// Step 5: the body as a JSON value (`null` when empty).
pub fn parse(kind: &BodyKind, body: &[u8], settings: &Settings) -> Result<Value, ApiError> {
    if body.is_empty() {
        return Ok(Value::Null);
    }
    match kind {
        BodyKind::Json => serde_json::from_slice(body).map_err(|_| {
            let text = String::from_utf8_lossy(body);
            let head: String = text.chars().take(50).collect();
            ApiError::new(errors::HTTP_BODY_PARSE_FAILED, [head])
        }),
        BodyKind::UrlEncoded => {
            let text = String::from_utf8_lossy(body);
            let map: Map<String, Value> = parse_query(&text)
                .into_iter()
                .map(|(k, v)| (k, Value::String(v)))
                .collect();
            Ok(Value::Object(map))
        }
        BodyKind::Multipart { boundary } => parse_multipart(
            body,
            boundary,
            settings.server.protocols.http.max_form_file_size.as_usize(),
        ),
    }
}

/// `application/x-www-form-urlencoded` pairs, `+` as space, in order.
pub fn parse_query(text: &str) -> Vec<(String, String)> {
    text.split('&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            let decode = |s: &str| crate::protocol::percent::percent_decode(&s.replace('+', " "));
            (decode(k), decode(v))
        })
        .collect()
}

fn malformed_multipart() -> ApiError {
    ApiError::new(
        errors::HTTP_BODY_PARSE_FAILED,
        ["malformed multipart/form-data body"],
    )
}

/// Text fields become strings; file parts become `{encoding, file (base64), filename}`.
fn parse_multipart(body: &[u8], boundary: &str, max_file: usize) -> Result<Value, ApiError> {
    if boundary.is_empty() {
        return Err(malformed_multipart());
    }
    let delimiter = format!("--{boundary}");
    let mut fields = Map::new();
    let mut rest = body;
    let start = find(rest, delimiter.as_bytes()).ok_or_else(malformed_multipart)?;
    rest = &rest[start + delimiter.len()..];
    loop {
        if rest.starts_with(b"--") {
            break;
        }
        rest = rest.strip_prefix(b"\r\n").ok_or_else(malformed_multipart)?;
        let end =
            find(rest, format!("\r\n{delimiter}").as_bytes()).ok_or_else(malformed_multipart)?;
        let part = &rest[..end];
        rest = &rest[end + 2 + delimiter.len()..];
        let split = find(part, b"\r\n\r\n").ok_or_else(malformed_multipart)?;
        let headers = String::from_utf8_lossy(&part[..split]);
        let content = &part[split + 4..];
        let mut name = None;
        let mut filename = None;
        let mut content_type = None;
        for line in headers.lines() {
            let Some((key, value)) = line.split_once(':') else {
                continue;
            };
            match key.trim().to_ascii_lowercase().as_str() {
                "content-disposition" => {
                    for param in value.split(';').map(str::trim) {
                        if let Some(v) = param.strip_prefix("name=") {
                            name = Some(v.trim_matches('"').to_owned());
                        } else if let Some(v) = param.strip_prefix("filename=") {
                            filename = Some(v.trim_matches('"').to_owned());
                        }
                    }
                }
                "content-type" => content_type = Some(value.trim().to_owned()),
                _ => {}
            }
        }
        let Some(name) = name else {
            return Err(malformed_multipart());
        };
        let value = match filename {
            Some(filename) => {
                if content.len() > max_file {
                    return Err(ApiError::plain(errors::HTTP_FILE_TOO_LARGE));
                }
                serde_json::json!({
                    "encoding": content_type.unwrap_or_else(|| "application/octet-stream".into()),
                    "file": base64::engine::general_purpose::STANDARD.encode(content),
                    "filename": filename,
                })
            }
            None => Value::String(String::from_utf8_lossy(content).into_owned()),
        };
        fields.insert(name, value);
    }
    Ok(Value::Object(fields))
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    memchr::memmem::find(haystack, needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn multipart_fields_and_files() {
        let body = b"--XyZ\r\nContent-Disposition: form-data; name=\"a\"\r\n\r\nhello\r\n--XyZ\r\nContent-Disposition: form-data; name=\"f\"; filename=\"x.txt\"\r\nContent-Type: text/plain\r\n\r\nabc\r\n--XyZ--\r\n";
        let v = parse_multipart(body, "XyZ", 1024).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"a":"hello","f":{"encoding":"text/plain","file":"YWJj","filename":"x.txt"}})
        );
        assert_eq!(
            parse_multipart(body, "XyZ", 2).unwrap_err().id(),
            Some("network.http.file_too_large")
        );
        assert_eq!(
            parse_multipart(b"garbage", "XyZ", 2).unwrap_err().id(),
            Some("network.http.body_parse_failed")
        );
    }

    #[test]
    fn query_pairs() {
        assert_eq!(
            parse_query("a=1&b=x+y&c&a=2&d=%41"),
            vec![
                ("a".into(), "1".into()),
                ("b".into(), "x y".into()),
                ("c".into(), "".into()),
                ("a".into(), "2".into()),
                ("d".into(), "A".into())
            ]
        );
    }
}
