//! Who may change state, and the headers every answer carries.
//!
//! - Reads stay open (the API listens on localhost by default). Every
//!   request that changes state (any method but GET, HEAD and OPTIONS,
//!   except the read-only `POST /api/verify`) needs `Authorization: Bearer
//!   TOKEN`; without it, or with a wrong one, the answer is 401 with
//!   `WWW-Authenticate: Bearer`. Tokens are compared in constant time.
//! - No CORS headers are ever sent, so no other site's page can read an
//!   answer; a request whose `Origin` names another host than the one it
//!   was sent to is refused (403) before the token is looked at: a browser
//!   on another site cannot be made to send a change (CSRF), nor to hold
//!   a stream (`/api/events`, `follow=true`) or run a verify for nothing.
//!   Browsers send `Origin` on every cross-origin request but simple GETs
//!   (`<img>`, `<script>`), which cannot read the answer either.
//! - Every answer says `X-Content-Type-Options: nosniff`, `Referrer-Policy:
//!   no-referrer` and `X-Frame-Options: DENY`; an error answer that is not
//!   JSON yet (axum's own: method not allowed, body too large) is rewritten
//!   as the API's JSON error.

use std::{fmt, path::Path, sync::Arc};

use axum::{
    extract::{Request, State},
    http::{HeaderMap, HeaderValue, Method, header},
    middleware::Next,
    response::{IntoResponse, Response},
};
use subtle::ConstantTimeEq as _;

use super::{AppState, error::ApiError};

/// The API token: 32 random bytes as hex when generated.
#[derive(Clone, PartialEq, Eq)]
pub struct Token(Arc<str>);

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Token(..)")
    }
}

/// A token that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    /// The token file cannot be read.
    #[error("cannot read the API token file {path}")]
    Read {
        /// The file.
        path: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The token is empty or not printable ASCII (it travels in a header).
    #[error("the API token from {origin} is {problem}")]
    Invalid {
        /// Where it came from.
        origin: String,
        /// What is wrong.
        problem: &'static str,
    },
    /// The system's random source failed.
    #[error("cannot generate an API token")]
    Random {
        /// Why.
        #[source]
        source: getrandom::Error,
    },
}

impl Token {
    /// A new random token.
    ///
    /// # Errors
    /// When the system's random source fails.
    pub fn generate() -> Result<Self, TokenError> {
        let mut bytes = [0_u8; 32];
        getrandom::fill(&mut bytes).map_err(|source| TokenError::Random { source })?;
        let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
        Ok(Self(hex.into()))
    }

    /// A given token (surrounding whitespace removed: files end with a
    /// newline, Secrets often too).
    ///
    /// # Errors
    /// An empty token, or one with characters a header cannot carry.
    pub fn new(text: &str, origin: &str) -> Result<Self, TokenError> {
        let token = text.trim();
        let invalid = |problem| TokenError::Invalid {
            origin: origin.to_owned(),
            problem,
        };
        if token.is_empty() {
            return Err(invalid("empty"));
        }
        if !token.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(invalid("not printable ASCII without spaces"));
        }
        Ok(Self(token.into()))
    }

    /// The token in `path` (a file, or a mounted Secret's key).
    ///
    /// # Errors
    /// An unreadable file, or an invalid token in it.
    pub fn from_file(path: &Path) -> Result<Self, TokenError> {
        let text = std::fs::read_to_string(path).map_err(|source| TokenError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Self::new(&text, &path.display().to_string())
    }

    /// The token's text.
    #[must_use]
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Whether `candidate` is the token, in time independent of where they
    /// differ.
    #[must_use]
    pub fn matches(&self, candidate: &str) -> bool {
        bool::from(self.0.as_bytes().ct_eq(candidate.as_bytes()))
    }
}

/// Whether a request changes state.
fn changes_state(method: &Method, path: &str) -> bool {
    !(matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS)
        || (*method == Method::POST && path == "/api/verify"))
}

/// The `Origin` of a cross-origin request: one whose `Origin` header is
/// present and does not name the `Host` it was sent to.
fn cross_origin(headers: &HeaderMap) -> Option<String> {
    let origin = headers.get(header::ORIGIN)?;
    let host = headers.get(header::HOST).and_then(|h| h.to_str().ok());
    let same = origin.to_str().ok().is_some_and(|origin| {
        let authority = origin
            .strip_prefix("http://")
            .or_else(|| origin.strip_prefix("https://"));
        authority.is_some_and(|a| Some(a) == host)
    });
    (!same).then(|| String::from_utf8_lossy(origin.as_bytes()).into_owned())
}

/// The bearer token of a request, if it sent one.
fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim_start())
}

/// Refuse requests from another origin, and state changes without the
/// token.
pub async fn guard(State(state): State<AppState>, request: Request, next: Next) -> Response {
    if let Some(origin) = cross_origin(request.headers()) {
        return ApiError::CrossOrigin {
            origin: super::error::shorten(&origin),
        }
        .into_response();
    }
    if changes_state(request.method(), request.uri().path())
        && !bearer(request.headers()).is_some_and(|t| state.token.matches(t))
    {
        return ApiError::Unauthorized.into_response();
    }
    next.run(request).await
}

/// The largest non-JSON error body rewritten as JSON (axum's rejections are
/// one line).
const MAX_ERROR_TEXT: usize = 4096;

/// Add the security headers; rewrite non-JSON error answers as JSON.
pub async fn headers(request: Request, next: Next) -> Response {
    let response = next.run(request).await;
    let mut response = if response.status().is_client_error() || response.status().is_server_error()
    {
        as_json_error(response).await
    } else {
        response
    };
    let headers = response.headers_mut();
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    response
}

async fn as_json_error(response: Response) -> Response {
    let is_json = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if is_json {
        return response;
    }
    let (parts, body) = response.into_parts();
    let text = axum::body::to_bytes(body, MAX_ERROR_TEXT)
        .await
        .map(|b| String::from_utf8_lossy(&b).trim().to_owned())
        .unwrap_or_default();
    let status = parts.status;
    let message = if text.is_empty() {
        status
            .canonical_reason()
            .unwrap_or("error")
            .to_ascii_lowercase()
    } else {
        text
    };
    let mut rewritten = ApiError::Status {
        code: status.as_u16(),
        message,
    }
    .into_response();
    // Keep what the original said beyond its body (`Allow` on a 405).
    for (name, value) in &parts.headers {
        if name != header::CONTENT_TYPE && name != header::CONTENT_LENGTH {
            rewritten.headers_mut().insert(name, value.clone());
        }
    }
    *rewritten.status_mut() = status;
    rewritten
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_tokens_are_64_hex_digits_and_differ() {
        let a = Token::generate().unwrap();
        let b = Token::generate().unwrap();
        assert_eq!(a.expose().len(), 64);
        assert!(a.expose().bytes().all(|c| c.is_ascii_hexdigit()));
        assert_ne!(a, b);
        assert!(a.matches(a.expose()));
        assert!(!a.matches(b.expose()));
        assert!(!a.matches(""));
        assert!(!a.matches(&a.expose()[..63]));
    }

    #[test]
    fn given_tokens_are_trimmed_and_checked() {
        assert_eq!(Token::new("s3cret\n", "env").unwrap().expose(), "s3cret");
        for bad in ["", " \n", "two words", "caf\u{e9}"] {
            let error = Token::new(bad, "WEIR_TOKEN").unwrap_err().to_string();
            assert!(error.contains("WEIR_TOKEN"), "{error}");
        }
        let dir = tempfile::tempdir().unwrap();
        let missing = Token::from_file(&dir.path().join("nope")).unwrap_err();
        assert!(missing.to_string().contains("nope"), "{missing}");
        assert!(!format!("{:?}", Token::new("s3cret", "x").unwrap()).contains("s3cret"));
    }

    #[test]
    fn reads_and_verify_need_no_token() {
        for (method, path, changes) in [
            (Method::GET, "/api/graph", false),
            (Method::HEAD, "/", false),
            (Method::POST, "/api/verify", false),
            (Method::POST, "/api/policies/enforced", true),
            (Method::PUT, "/api/modes/shop", true),
            (Method::DELETE, "/api/policies/enforced/a/b", true),
            (Method::PATCH, "/api/graph", true),
            (Method::POST, "/api/verify/suggestion", true),
        ] {
            assert_eq!(changes_state(&method, path), changes, "{method} {path}");
        }
    }

    #[test]
    fn origins_must_name_the_host() {
        let headers = |origin: Option<&str>| {
            let mut h = HeaderMap::new();
            h.insert(header::HOST, HeaderValue::from_static("127.0.0.1:9090"));
            if let Some(o) = origin {
                h.insert(header::ORIGIN, HeaderValue::from_str(o).unwrap());
            }
            h
        };
        assert_eq!(cross_origin(&headers(None)), None);
        assert_eq!(cross_origin(&headers(Some("http://127.0.0.1:9090"))), None);
        for other in [
            "http://evil.example",
            "http://127.0.0.1:9091",
            "null",
            "http://127.0.0.1:9090.evil.example",
        ] {
            assert_eq!(
                cross_origin(&headers(Some(other))).as_deref(),
                Some(other),
                "{other}"
            );
        }
    }

    #[test]
    fn bearer_tokens_are_read_case_insensitively() {
        let mut h = HeaderMap::new();
        assert_eq!(bearer(&h), None);
        h.insert(header::AUTHORIZATION, HeaderValue::from_static("Basic abc"));
        assert_eq!(bearer(&h), None);
        h.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("bearer abc"),
        );
        assert_eq!(bearer(&h), Some("abc"));
    }
}
