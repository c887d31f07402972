//! Builds HTTP responses with the headers every answer carries (PROTOCOL.md §2.8):
//! request id, node id, CORS, content type and encoding.

use std::io::Write;
use std::sync::Arc;

use actix_web::http::{StatusCode, header};
use actix_web::{HttpRequest, HttpResponse, HttpResponseBuilder};
use flate2::Compression;
use flate2::write::{GzEncoder, ZlibEncoder};
use serde_json::Value;

use crate::node::Node;
use crate::protocol::{ApiError, Response};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Encoding {
    Identity,
    Gzip,
    Deflate,
}

impl Encoding {
    fn name(self) -> &'static str {
        match self {
            Encoding::Identity => "identity",
            Encoding::Gzip => "gzip",
            Encoding::Deflate => "deflate",
        }
    }
}

/// Everything about the incoming request that shapes the response.
pub struct Reply {
    pub request_id: String,
    pub origin: Option<String>,
    /// The origin may carry credentials (`OriginPolicy::carries_credentials`).
    pub credentials: bool,
    node: Arc<Node>,
    encoding: Encoding,
    pretty: bool,
}

impl Reply {
    pub fn new(req: &HttpRequest, node: &Arc<Node>, request_id: String) -> Self {
        let allow_compression = node.settings.server.protocols.http.allow_compression;
        let accepted = req
            .headers()
            .get(header::ACCEPT_ENCODING)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default();
        let text = |name| req.headers().get(name).and_then(|v| v.to_str().ok());
        let origin = text(header::ORIGIN).map(str::to_owned);
        Reply {
            request_id,
            credentials: node
                .origins
                .carries_credentials(origin.as_deref(), text(header::HOST)),
            origin,
            node: node.clone(),
            encoding: if allow_compression {
                negotiate(accepted)
            } else {
                Encoding::Identity
            },
            pretty: super::body::parse_query(req.query_string())
                .iter()
                .any(|(k, _)| k == "pretty"),
        }
    }

    pub fn envelope(&self, response: &Response) -> HttpResponse {
        let text = if self.pretty {
            serde_json::to_string_pretty(response).unwrap_or_default()
        } else {
            response.to_json()
        };
        self.send(
            response.status,
            "application/json",
            text.into_bytes(),
            false,
        )
    }

    /// Steps 1–5 fail with the error object alone as the body.
    pub fn bare(&self, error: &ApiError) -> HttpResponse {
        let text = serde_json::to_string(error).unwrap_or_default();
        self.send(error.status(), "application/json", text.into_bytes(), true)
    }

    /// A document sent as is (`server:openapi`): text stays text, anything else is JSON.
    pub fn raw(&self, content_type: &str, document: &Value) -> HttpResponse {
        let body = match document {
            Value::String(text) => text.clone().into_bytes(),
            other if self.pretty => serde_json::to_vec_pretty(other).unwrap_or_default(),
            other => serde_json::to_vec(other).unwrap_or_default(),
        };
        self.send(200, content_type, body, false)
    }

    /// Adds one `Set-Cookie` line per cookie.
    pub fn with_cookies(&self, mut response: HttpResponse, cookies: &[String]) -> HttpResponse {
        for cookie in cookies {
            if let Ok(value) = header::HeaderValue::from_str(cookie) {
                response.headers_mut().append(header::SET_COOKIE, value);
            }
        }
        response
    }

    pub fn head(&self) -> HttpResponse {
        let mut builder = self.builder(200, "application/json", false);
        builder.insert_header((header::CONTENT_ENCODING, Encoding::Identity.name()));
        builder.finish()
    }

    fn builder(&self, status: u16, content_type: &str, bare: bool) -> HttpResponseBuilder {
        let settings = &self.node.settings;
        let mut builder = HttpResponse::build(
            StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
        );
        builder
            .insert_header(("X-Kuzzle-Request-Id", self.request_id.as_str()))
            .insert_header(("X-Kuzzle-Node", &*self.node.id))
            .insert_header((header::CONTENT_TYPE, content_type))
            .insert_header((
                header::ACCEPT_ENCODING,
                if settings.server.protocols.http.allow_compression {
                    "gzip,deflate,identity"
                } else {
                    "identity"
                },
            ))
            .insert_header((
                header::ACCESS_CONTROL_ALLOW_HEADERS,
                settings.http.access_control_allow_headers.as_str(),
            ))
            .insert_header((
                header::ACCESS_CONTROL_ALLOW_METHODS,
                settings.http.access_control_allow_methods.as_str(),
            ));
        if settings.http.cookie_authentication && self.credentials {
            builder.insert_header((header::ACCESS_CONTROL_ALLOW_CREDENTIALS, "true"));
        }
        if let Some(origin) = &self.origin {
            let allow = if bare && self.node.origins.allows_any() {
                "*"
            } else {
                origin.as_str()
            };
            builder
                .insert_header((header::ACCESS_CONTROL_ALLOW_ORIGIN, allow))
                .insert_header((header::VARY, "Origin"));
        }
        if self.node.is_draining() {
            builder.force_close();
        }
        builder
    }

    fn send(&self, status: u16, content_type: &str, body: Vec<u8>, bare: bool) -> HttpResponse {
        let mut builder = self.builder(status, content_type, bare);
        let (encoding, body) = match compress(self.encoding, &body) {
            Some(compressed) => (self.encoding, compressed),
            None => (Encoding::Identity, body),
        };
        builder.insert_header((header::CONTENT_ENCODING, encoding.name()));
        builder.body(body)
    }
}

fn compress(encoding: Encoding, body: &[u8]) -> Option<Vec<u8>> {
    match encoding {
        Encoding::Identity => None,
        Encoding::Gzip => {
            let mut encoder = GzEncoder::new(Vec::new(), Compression::fast());
            encoder.write_all(body).ok()?;
            encoder.finish().ok()
        }
        Encoding::Deflate => {
            let mut encoder = ZlibEncoder::new(Vec::new(), Compression::fast());
            encoder.write_all(body).ok()?;
            encoder.finish().ok()
        }
    }
}

/// The best of gzip and deflate by q-value (gzip wins a tie); identity when neither is acceptable.
fn negotiate(accept_encoding: &str) -> Encoding {
    let mut best = (Encoding::Identity, 0.0f32);
    for entry in accept_encoding.split(',') {
        let mut parts = entry.split(';').map(str::trim);
        let name = parts.next().unwrap_or_default().to_ascii_lowercase();
        let q = parts
            .find_map(|p| p.strip_prefix("q="))
            .and_then(|q| q.parse::<f32>().ok())
            .unwrap_or(1.0);
        let encoding = match name.as_str() {
            "gzip" => Encoding::Gzip,
            "deflate" => Encoding::Deflate,
            _ => continue,
        };
        let better = q > best.1 || (q == best.1 && q > 0.0 && encoding == Encoding::Gzip);
        if q > 0.0 && better {
            best = (encoding, q);
        }
    }
    best.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn negotiation_follows_q_values() {
        assert_eq!(negotiate(""), Encoding::Identity);
        assert_eq!(negotiate("gzip"), Encoding::Gzip);
        assert_eq!(
            negotiate("deflate, gzip"),
            Encoding::Gzip,
            "gzip wins a tie"
        );
        assert_eq!(negotiate("gzip;q=0.5, deflate"), Encoding::Deflate);
        assert_eq!(negotiate("gzip;q=0, br"), Encoding::Identity);
        assert_eq!(negotiate("br, identity"), Encoding::Identity);
    }
}
