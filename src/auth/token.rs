//! Authentication tokens (PROTOCOL.md §5): `kauth-` (or `kapikey-` for an API key's) + a
//! compact HS256/384/512 JWS with `{"_id", "iat", "exp"?, "jti"}`. Signatures are checked in
//! constant time.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac};
use serde_json::{Value, json};
use sha2::{Sha256, Sha384, Sha512};

use crate::config::timespan::Lifetime;

const PREFIX: &str = "kauth-";
/// The prefix of an API key's token (PROTOCOL.md §5.6).
pub const API_KEY_PREFIX: &str = "kapikey-";

/// Whether `token` is an API key's.
pub fn is_api_key(token: &str) -> bool {
    token.starts_with(API_KEY_PREFIX)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Algorithm {
    Hs256,
    Hs384,
    Hs512,
}

impl Algorithm {
    /// `HS256`, `HS384` or `HS512`, as in `security.authToken.algorithm`.
    pub fn parse(name: &str) -> Option<Algorithm> {
        Some(match name {
            "HS256" => Algorithm::Hs256,
            "HS384" => Algorithm::Hs384,
            "HS512" => Algorithm::Hs512,
            _ => return None,
        })
    }

    fn name(self) -> &'static str {
        match self {
            Algorithm::Hs256 => "HS256",
            Algorithm::Hs384 => "HS384",
            Algorithm::Hs512 => "HS512",
        }
    }

    fn sign(self, secret: &[u8], data: &[u8]) -> Vec<u8> {
        fn mac<M: Mac + hmac::digest::KeyInit>(secret: &[u8], data: &[u8]) -> Vec<u8> {
            // HMAC accepts keys of any length, so this cannot fail.
            match <M as hmac::digest::KeyInit>::new_from_slice(secret) {
                Ok(mut m) => {
                    m.update(data);
                    m.finalize().into_bytes().to_vec()
                }
                Err(_) => Vec::new(),
            }
        }
        match self {
            Algorithm::Hs256 => mac::<Hmac<Sha256>>(secret, data),
            Algorithm::Hs384 => mac::<Hmac<Sha384>>(secret, data),
            Algorithm::Hs512 => mac::<Hmac<Sha512>>(secret, data),
        }
    }

    fn verify(self, secret: &[u8], data: &[u8], signature: &[u8]) -> bool {
        fn check<M: Mac + hmac::digest::KeyInit>(
            secret: &[u8],
            data: &[u8],
            signature: &[u8],
        ) -> bool {
            match <M as hmac::digest::KeyInit>::new_from_slice(secret) {
                Ok(mut m) => {
                    m.update(data);
                    m.verify_slice(signature).is_ok()
                }
                Err(_) => false,
            }
        }
        match self {
            Algorithm::Hs256 => check::<Hmac<Sha256>>(secret, data, signature),
            Algorithm::Hs384 => check::<Hmac<Sha384>>(secret, data, signature),
            Algorithm::Hs512 => check::<Hmac<Sha512>>(secret, data, signature),
        }
    }
}

/// A token the node issued.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Issued {
    pub token: String,
    pub kuid: String,
    /// Milliseconds since the epoch; None for an infinite token.
    pub expires_at: Option<u64>,
    /// Milliseconds; None for an infinite token.
    pub ttl: Option<u64>,
}

/// Signs a token for `kuid`, created at `now_ms`. `exp = iat + floor(ttl / 1000)`.
pub fn issue(
    algorithm: Algorithm,
    secret: &[u8],
    kuid: &str,
    lifetime: Lifetime,
    now_ms: u64,
) -> Issued {
    sign(PREFIX, algorithm, secret, kuid, lifetime, now_ms)
}

/// Signs an API key's token: as `issue`, with the `kapikey-` prefix.
pub fn issue_api_key(
    algorithm: Algorithm,
    secret: &[u8],
    kuid: &str,
    lifetime: Lifetime,
    now_ms: u64,
) -> Issued {
    sign(API_KEY_PREFIX, algorithm, secret, kuid, lifetime, now_ms)
}

fn sign(
    prefix: &str,
    algorithm: Algorithm,
    secret: &[u8],
    kuid: &str,
    lifetime: Lifetime,
    now_ms: u64,
) -> Issued {
    let iat = now_ms / 1000;
    // `jti` makes every token unique: two logins in the same second are two sessions.
    let jti = uuid::Uuid::new_v4().to_string();
    let (mut payload, ttl) = match lifetime {
        Lifetime::Infinite => (json!({"_id": kuid, "iat": iat, "jti": jti}), None),
        Lifetime::Millis(ttl) => (
            json!({"_id": kuid, "iat": iat, "exp": iat + ttl / 1000, "jti": jti}),
            Some(ttl),
        ),
    };
    // The signed payload says which kind of token it is, so that a login's token cannot
    // pass for an API key's by a change of prefix (or the reverse).
    if prefix == API_KEY_PREFIX {
        payload["apiKey"] = json!(true);
    }
    let header = json!({"alg": algorithm.name(), "typ": "JWT"});
    let signing_input = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header.to_string()),
        URL_SAFE_NO_PAD.encode(payload.to_string())
    );
    let signature = URL_SAFE_NO_PAD.encode(algorithm.sign(secret, signing_input.as_bytes()));
    Issued {
        token: format!("{prefix}{signing_input}.{signature}"),
        kuid: kuid.to_owned(),
        expires_at: ttl.map(|t| now_ms + t),
        ttl,
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenError {
    /// Not a token this node could have issued: `security.token.invalid`.
    Invalid,
    /// Past its `exp`: `security.token.expired`.
    Expired,
}

/// What a valid signature vouches for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claims {
    pub kuid: String,
    /// Seconds since the epoch; None for an infinite token.
    pub exp: Option<u64>,
}

/// Steps 2 and 3 of §5.4: format, algorithm, signature and `_id`, then `exp`. Whether the
/// token is still in the store (revocation) is the caller's next step.
pub fn verify(
    algorithm: Algorithm,
    secret: &[u8],
    token: &str,
    now_ms: u64,
) -> Result<Claims, TokenError> {
    let (jws, api_key) = match token.strip_prefix(PREFIX) {
        Some(jws) => (jws, false),
        None => (
            token
                .strip_prefix(API_KEY_PREFIX)
                .ok_or(TokenError::Invalid)?,
            true,
        ),
    };
    let mut parts = jws.split('.');
    let (Some(header), Some(payload), Some(signature), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(TokenError::Invalid);
    };
    let decode_json = |part: &str| -> Result<Value, TokenError> {
        let bytes = URL_SAFE_NO_PAD
            .decode(part)
            .map_err(|_| TokenError::Invalid)?;
        serde_json::from_slice(&bytes).map_err(|_| TokenError::Invalid)
    };
    let header = decode_json(header)?;
    if header.get("alg").and_then(Value::as_str) != Some(algorithm.name()) {
        return Err(TokenError::Invalid);
    }
    let signature = URL_SAFE_NO_PAD
        .decode(signature)
        .map_err(|_| TokenError::Invalid)?;
    let signed = &jws[..jws.len() - jws.rsplit('.').next().map_or(0, str::len) - 1];
    if !algorithm.verify(secret, signed.as_bytes(), &signature) {
        return Err(TokenError::Invalid);
    }
    let payload = decode_json(payload)?;
    if payload
        .get("apiKey")
        .and_then(Value::as_bool)
        .unwrap_or(false)
        != api_key
    {
        return Err(TokenError::Invalid);
    }
    let kuid = payload
        .get("_id")
        .and_then(Value::as_str)
        .filter(|k| !k.is_empty())
        .ok_or(TokenError::Invalid)?;
    let exp = match payload.get("exp") {
        None => None,
        Some(v) => Some(v.as_u64().ok_or(TokenError::Invalid)?),
    };
    if exp.is_some_and(|exp| exp <= now_ms / 1000) {
        return Err(TokenError::Expired);
    }
    Ok(Claims {
        kuid: kuid.to_owned(),
        exp,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &[u8] = b"a secret long enough for anyone";
    const NOW: u64 = 1_700_000_000_000;

    fn b64(v: &Value) -> String {
        URL_SAFE_NO_PAD.encode(v.to_string())
    }

    #[test]
    fn issues_what_the_sdk_reads() {
        let issued = issue(
            Algorithm::Hs256,
            SECRET,
            "ada",
            Lifetime::Millis(3_600_500),
            NOW,
        );
        assert!(issued.token.starts_with("kauth-"));
        assert_eq!(issued.expires_at, Some(NOW + 3_600_500));
        let payload = issued.token.split('.').nth(1).unwrap();
        let payload: Value =
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).unwrap()).unwrap();
        assert_eq!(payload["jti"].as_str().map(str::len), Some(36));
        let twin = issue(
            Algorithm::Hs256,
            SECRET,
            "ada",
            Lifetime::Millis(3_600_500),
            NOW,
        );
        assert_ne!(
            twin.token, issued.token,
            "same user, same second: still two tokens"
        );
        let mut payload = payload;
        payload.as_object_mut().unwrap().remove("jti");
        assert_eq!(
            payload,
            json!({"_id": "ada", "iat": 1_700_000_000u64, "exp": 1_700_003_600u64})
        );
        assert_eq!(
            verify(Algorithm::Hs256, SECRET, &issued.token, NOW),
            Ok(Claims {
                kuid: "ada".into(),
                exp: Some(1_700_003_600)
            })
        );
    }

    #[test]
    fn infinite_tokens_have_no_exp() {
        let issued = issue(Algorithm::Hs512, SECRET, "ada", Lifetime::Infinite, NOW);
        assert_eq!((issued.expires_at, issued.ttl), (None, None));
        assert_eq!(
            verify(Algorithm::Hs512, SECRET, &issued.token, u64::MAX / 2)
                .unwrap()
                .exp,
            None
        );
    }

    #[test]
    fn expired_tokens() {
        let issued = issue(Algorithm::Hs384, SECRET, "ada", Lifetime::Millis(2000), NOW);
        assert!(verify(Algorithm::Hs384, SECRET, &issued.token, NOW + 1999).is_ok());
        assert_eq!(
            verify(Algorithm::Hs384, SECRET, &issued.token, NOW + 2000),
            Err(TokenError::Expired)
        );
    }

    #[test]
    fn forged_tampered_and_foreign_tokens_are_invalid() {
        let good = issue(
            Algorithm::Hs256,
            SECRET,
            "ada",
            Lifetime::Millis(60_000),
            NOW,
        )
        .token;
        let invalid = |token: &str| {
            assert_eq!(
                verify(Algorithm::Hs256, SECRET, token, NOW),
                Err(TokenError::Invalid),
                "{token}"
            )
        };
        invalid(&good["kauth-".len()..]);
        invalid(&good.replace("kauth-", "kapikey-"));
        let key = issue_api_key(Algorithm::Hs256, SECRET, "ada", Lifetime::Infinite, NOW).token;
        assert!(is_api_key(&key) && !is_api_key(&good));
        assert_eq!(
            verify(Algorithm::Hs256, SECRET, &key, NOW).map(|c| c.kuid),
            Ok("ada".to_owned())
        );
        invalid(&key.replace("kapikey-", "kauth-"));
        invalid(&format!("{good}x"));
        invalid("kauth-");
        invalid("kauth-a.b");
        invalid("kauth-a.b.c.d");
        // Wrong secret, or a token signed with another algorithm.
        assert_eq!(
            verify(Algorithm::Hs256, b"another secret", &good, NOW),
            Err(TokenError::Invalid)
        );
        let hs512 = issue(
            Algorithm::Hs512,
            SECRET,
            "ada",
            Lifetime::Millis(60_000),
            NOW,
        )
        .token;
        invalid(&hs512);
        // A payload changed to another user, the signature kept.
        let parts: Vec<&str> = good.split('.').collect();
        invalid(&format!(
            "{}.{}.{}",
            parts[0],
            b64(&json!({"_id": "root", "iat": 1, "exp": 9_999_999_999u64})),
            parts[2]
        ));
        // alg: none, unsigned.
        let none = format!(
            "kauth-{}.{}.",
            b64(&json!({"alg": "none", "typ": "JWT"})),
            b64(&json!({"_id": "root", "iat": 1}))
        );
        invalid(&none);
        // Properly signed but without _id.
        let header = b64(&json!({"alg": "HS256", "typ": "JWT"}));
        let payload = b64(&json!({"iat": 1}));
        let signature = URL_SAFE_NO_PAD
            .encode(Algorithm::Hs256.sign(SECRET, format!("{header}.{payload}").as_bytes()));
        invalid(&format!("kauth-{header}.{payload}.{signature}"));
    }
}
