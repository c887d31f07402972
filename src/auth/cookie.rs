//! Cookie authentication (PROTOCOL.md §6): the `authToken` cookie.

use std::time::{Duration, UNIX_EPOCH};

pub const NAME: &str = "authToken";

/// What the request's `Cookie` header says about `authToken`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthCookie {
    /// Absent, empty or the literal `null`: not usable.
    Unusable,
    /// Present but not valid UTF-8 once percent-decoded: `security.cookie.invalid`.
    Invalid,
    Usable(String),
    /// The request's `Origin` may not carry credentials (PROTOCOL.md §6.4): any cookie is
    /// ignored and cookie mode is refused.
    Withheld,
}

/// Reads `authToken` from a `Cookie` header, for a request whose origin may carry
/// credentials (`credentials`); for any other, the cookie is withheld.
pub fn read(header: Option<&str>, credentials: bool) -> AuthCookie {
    if credentials {
        parse(header)
    } else {
        AuthCookie::Withheld
    }
}

/// Reads `authToken` from a `Cookie` header; other cookies are ignored.
pub fn parse(header: Option<&str>) -> AuthCookie {
    let Some(header) = header else {
        return AuthCookie::Unusable;
    };
    let Some(raw) = header
        .split(';')
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == NAME)
        .map(|(_, value)| value)
    else {
        return AuthCookie::Unusable;
    };
    let decoded = crate::protocol::percent::percent_decode_bytes(raw.trim());
    match String::from_utf8(decoded) {
        Err(_) => AuthCookie::Invalid,
        Ok(value) if value.is_empty() || value == "null" => AuthCookie::Unusable,
        Ok(value) => AuthCookie::Usable(value),
    }
}

/// `Set-Cookie` for a token: no `Expires` for an infinite token (CN-30).
pub fn set(token: &str, expires_at_ms: Option<u64>) -> String {
    match expires_at_ms {
        Some(ms) => format!(
            "{NAME}={token}; Path=/; Expires={}; HttpOnly; SameSite=Strict",
            httpdate::fmt_http_date(UNIX_EPOCH + Duration::from_millis(ms))
        ),
        None => format!("{NAME}={token}; Path=/; HttpOnly; SameSite=Strict"),
    }
}

/// `Set-Cookie` that clears the cookie.
pub fn clear() -> String {
    format!("{NAME}=null; Path=/; HttpOnly; SameSite=Strict")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_only_auth_token() {
        assert_eq!(parse(None), AuthCookie::Unusable);
        assert_eq!(
            parse(Some("a=1; authToken=kauth-x; b=2")),
            AuthCookie::Usable("kauth-x".into())
        );
        assert_eq!(parse(Some("authToken=null")), AuthCookie::Unusable);
        assert_eq!(parse(Some("authToken=")), AuthCookie::Unusable);
        assert_eq!(parse(Some("other=kauth-x")), AuthCookie::Unusable);
        assert_eq!(parse(Some("authToken=%FF%FE")), AuthCookie::Invalid);
        assert_eq!(
            parse(Some("authToken=a%2Eb")),
            AuthCookie::Usable("a.b".into())
        );
    }

    #[test]
    fn set_and_clear_have_the_documented_attributes() {
        assert_eq!(
            set("t", Some(0)),
            "authToken=t; Path=/; Expires=Thu, 01 Jan 1970 00:00:00 GMT; HttpOnly; SameSite=Strict"
        );
        assert_eq!(
            set("t", None),
            "authToken=t; Path=/; HttpOnly; SameSite=Strict"
        );
        assert_eq!(clear(), "authToken=null; Path=/; HttpOnly; SameSite=Strict");
    }
}
