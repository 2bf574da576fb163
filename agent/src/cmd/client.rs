//! The HTTP client every command uses to talk to an agent: where it is
//! (`--server`, `WEIR_SERVER`), its API token (`--token`, `WEIR_TOKEN`,
//! `--token-file`), URLs built one path segment at a time, and requests
//! whose failures say what went wrong ([`ClientError`]).
//!
//! Blocking HTTP is enough for a CLI that does one request (or follows one
//! stream) and prints.

use std::{path::PathBuf, time::Duration};

use reqwest::{
    StatusCode, Url,
    blocking::{RequestBuilder, Response},
};
use serde::de::DeserializeOwned;
use weir_generator::names;

/// The agent's default address.
pub const DEFAULT_SERVER: &str = "http://127.0.0.1:9090";

/// The agent's default token file: `api-token` in its default state
/// directory.
pub const DEFAULT_TOKEN_FILE: &str = "/var/lib/weir/api-token";

/// How long a request may take, answer included.
pub const TIMEOUT: Duration = Duration::from_secs(60);

/// Where the agent is.
#[derive(Debug, clap::Args)]
pub struct ServerArgs {
    /// Base URL of the agent's API.
    #[arg(long, env = "WEIR_SERVER", default_value = DEFAULT_SERVER)]
    pub server: Url,
}

/// How a command that changes state finds the agent's API token.
#[derive(Clone, Debug, Default, clap::Args)]
pub struct TokenArgs {
    /// The agent's API token.
    #[arg(long, env = "WEIR_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// A file holding the token (used when --token and WEIR_TOKEN are not
    /// given).
    #[arg(
        long,
        value_name = "FILE",
        env = "WEIR_TOKEN_FILE",
        default_value = DEFAULT_TOKEN_FILE
    )]
    pub token_file: PathBuf,
}

/// A token, or why there is none (said when the agent refuses).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ApiToken {
    /// The token to send.
    Token(String),
    /// None could be found: why.
    Missing(String),
}

impl TokenArgs {
    /// The token to send.
    #[must_use]
    pub fn resolve(&self) -> ApiToken {
        if let Some(token) = self
            .token
            .as_deref()
            .map(str::trim)
            .filter(|t| !t.is_empty())
        {
            return ApiToken::Token(token.to_owned());
        }
        match std::fs::read_to_string(&self.token_file) {
            Ok(text) if !text.trim().is_empty() => ApiToken::Token(text.trim().to_owned()),
            Ok(_) => ApiToken::Missing(format!("{} is empty", self.token_file.display())),
            Err(error) => ApiToken::Missing(format!(
                "no --token or WEIR_TOKEN, and {} cannot be read: {error}",
                self.token_file.display()
            )),
        }
    }
}

/// A namespace argument: a DNS-1123 label, checked before it goes into a
/// URL or a request (`kube-system#oops` is refused, not sent).
///
/// # Errors
/// Why it is not a namespace name.
pub fn namespace_arg(s: &str) -> Result<String, String> {
    names::dns1123_label(s).map(|()| s.to_owned())
}

/// The server of a command that also works offline: `--server`, else
/// `WEIR_SERVER`, else [`DEFAULT_SERVER`].
///
/// # Errors
/// `WEIR_SERVER` is not a URL.
pub fn server_url(server: Option<&Url>) -> Result<Url, ClientError> {
    match server {
        Some(url) => Ok(url.clone()),
        None => match std::env::var("WEIR_SERVER") {
            Ok(value) => value
                .parse()
                .map_err(|source| ClientError::BadServer { value, source }),
            Err(_) => Ok(Url::parse(DEFAULT_SERVER).expect("the default server is a URL")),
        },
    }
}

/// The URL of an API path under the server's base URL (which may have a
/// path prefix, with or without a trailing `/`): each segment is
/// percent-encoded, `/`, `#`, `?` and `%` included, so a name never adds a
/// path segment, a fragment or a query.
///
/// # Errors
/// An empty, `.` or `..` segment (a URL drops or resolves them), or a
/// server URL that cannot have a path (`mailto:`).
pub fn endpoint(server: &Url, segments: &[&str]) -> Result<Url, ClientError> {
    if let Some(bad) = segments.iter().find(|s| matches!(**s, "" | "." | "..")) {
        return Err(ClientError::BadSegment((*bad).to_owned()));
    }
    let mut url = server.clone();
    url.set_query(None);
    url.set_fragment(None);
    url.path_segments_mut()
        .map_err(|()| ClientError::NotABase(server.clone()))?
        .pop_if_empty()
        .extend(segments);
    Ok(url)
}

/// Why a request to the agent failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// `WEIR_SERVER` does not parse.
    #[error("WEIR_SERVER={value:?} is not a URL")]
    BadServer {
        /// Its value.
        value: String,
        /// Why.
        #[source]
        source: <Url as std::str::FromStr>::Err,
    },
    /// A path segment a URL would drop or resolve.
    #[error("{0:?} cannot be a segment of a URL path")]
    BadSegment(String),
    /// A server URL that cannot have a path.
    #[error("{0} cannot be the agent's URL")]
    NotABase(Url),
    /// The HTTP client cannot be set up.
    #[error("cannot build an HTTP client")]
    Build(#[source] reqwest::Error),
    /// Nothing answered: connection refused, no route, bad name.
    #[error("cannot reach the weir agent at {url} (is `weir agent` running? see --server)")]
    Unreachable {
        /// What was asked.
        url: Url,
        /// Why.
        #[source]
        source: reqwest::Error,
    },
    /// The agent did not answer in time.
    #[error("cannot reach the weir agent at {url} (is `weir agent` running? see --server)")]
    Timeout {
        /// What was asked.
        url: Url,
        /// Why.
        #[source]
        source: reqwest::Error,
    },
    /// 401: no token, or a wrong one.
    #[error(transparent)]
    Unauthorized(Box<Refusal>),
    /// 401 on a change: the token and how to pass it.
    #[error(
        "the agent refused the change: it needs its API token ({hint}); pass --token, set \
         WEIR_TOKEN, or point --token-file at the agent's <state-dir>/api-token (printed in its \
         log at start)"
    )]
    TokenRefused {
        /// Where the token came from, or why there was none.
        hint: String,
        /// The agent's answer.
        #[source]
        source: Box<Refusal>,
    },
    /// 403.
    #[error(transparent)]
    Forbidden(Box<Refusal>),
    /// Another 4xx: the request was bad.
    #[error(transparent)]
    Rejected(Box<Refusal>),
    /// 5xx (or any other non-success status): the agent failed.
    #[error(transparent)]
    Failed(Box<Refusal>),
    /// A success whose body is not what was asked for.
    #[error("{url} did not answer with {what}")]
    Decode {
        /// What was asked.
        url: Url,
        /// What was expected.
        what: &'static str,
        /// Why it did not read.
        #[source]
        source: reqwest::Error,
    },
}

/// An error status from the agent, with its own message (its JSON
/// `error`, else the status).
#[derive(Debug, thiserror::Error)]
#[error("{url}: {message}")]
pub struct Refusal {
    /// What was asked.
    pub url: Url,
    /// The agent's message.
    pub message: String,
    /// The status, under the message.
    #[source]
    pub status: HttpStatus,
}

/// An HTTP status.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("HTTP {}", .0.as_u16())]
pub struct HttpStatus(pub StatusCode);

impl ClientError {
    /// The agent's refusal, if it answered with an error status.
    #[must_use]
    pub fn refusal(&self) -> Option<&Refusal> {
        match self {
            Self::Unauthorized(r) | Self::Forbidden(r) | Self::Rejected(r) | Self::Failed(r) => {
                Some(r)
            }
            Self::TokenRefused { source, .. } => Some(source),
            _ => None,
        }
    }
}

/// A blocking client of one agent's API.
#[derive(Clone, Debug)]
pub struct Client {
    http: reqwest::blocking::Client,
}

impl Client {
    /// A client whose requests give up after [`TIMEOUT`].
    ///
    /// # Errors
    /// [`ClientError::Build`].
    pub fn new() -> Result<Self, ClientError> {
        Self::with_timeout(Some(TIMEOUT))
    }

    /// A client whose requests give up after `timeout` (never: `None`, for
    /// a followed stream). Connecting gives up after 5 s either way.
    ///
    /// # Errors
    /// [`ClientError::Build`].
    pub fn with_timeout(timeout: Option<Duration>) -> Result<Self, ClientError> {
        let mut headers = reqwest::header::HeaderMap::new();
        // Who asks, for the agent's audit log (the token only says the
        // client may).
        if let Some(user) = std::env::var("USER")
            .ok()
            .and_then(|u| reqwest::header::HeaderValue::from_str(&u).ok())
        {
            headers.insert(crate::api::wire::ACTOR_HEADER, user);
        }
        let http = reqwest::blocking::Client::builder()
            .default_headers(headers)
            .connect_timeout(Duration::from_secs(5))
            .timeout(timeout)
            .build()
            .map_err(ClientError::Build)?;
        Ok(Self { http })
    }

    /// `GET url`.
    ///
    /// # Errors
    /// See [`Client::send`].
    pub fn get(&self, url: &Url) -> Result<Response, ClientError> {
        self.send(self.http.get(url.clone()), url)
    }

    /// `GET url`, its JSON answer read as `T` (`what` names it in errors).
    ///
    /// # Errors
    /// See [`Client::send`]; [`ClientError::Decode`].
    pub fn get_json<T: DeserializeOwned>(
        &self,
        url: &Url,
        what: &'static str,
    ) -> Result<T, ClientError> {
        decode(self.get(url)?, url, what)
    }

    /// `POST url` with a YAML body.
    pub fn post_yaml(&self, url: &Url, body: String) -> RequestBuilder {
        self.http
            .post(url.clone())
            .header(reqwest::header::CONTENT_TYPE, "application/yaml")
            .body(body)
    }

    /// `POST url` (a JSON body follows).
    pub fn post(&self, url: &Url) -> RequestBuilder {
        self.http.post(url.clone())
    }

    /// `PUT url`.
    pub fn put(&self, url: &Url) -> RequestBuilder {
        self.http.put(url.clone())
    }

    /// `DELETE url`.
    pub fn delete(&self, url: &Url) -> RequestBuilder {
        self.http.delete(url.clone())
    }

    /// Send `request` (to `url`); an error status is an error.
    ///
    /// # Errors
    /// [`ClientError::Unreachable`], [`ClientError::Timeout`], or the
    /// refusal by its status.
    pub fn send(&self, request: RequestBuilder, url: &Url) -> Result<Response, ClientError> {
        let response = request.send().map_err(|source| {
            if source.is_timeout() {
                ClientError::Timeout {
                    url: url.clone(),
                    source,
                }
            } else {
                ClientError::Unreachable {
                    url: url.clone(),
                    source,
                }
            }
        })?;
        let status = response.status();
        if status.is_success() {
            return Ok(response);
        }
        let message = response
            .json::<serde_json::Value>()
            .ok()
            .and_then(|v| v.get("error").and_then(|e| e.as_str()).map(str::to_owned))
            .unwrap_or_else(|| status.to_string());
        let refusal = Box::new(Refusal {
            url: url.clone(),
            message,
            status: HttpStatus(status),
        });
        Err(match status {
            StatusCode::UNAUTHORIZED => ClientError::Unauthorized(refusal),
            StatusCode::FORBIDDEN => ClientError::Forbidden(refusal),
            s if s.is_client_error() => ClientError::Rejected(refusal),
            _ => ClientError::Failed(refusal),
        })
    }

    /// Send a request that changes state, with the token; a 401 says how
    /// to pass the token.
    ///
    /// # Errors
    /// See [`Client::send`]; a 401 is [`ClientError::TokenRefused`].
    pub fn change(
        &self,
        request: RequestBuilder,
        url: &Url,
        token: &ApiToken,
    ) -> Result<Response, ClientError> {
        let request = match token {
            ApiToken::Token(token) => request.bearer_auth(token),
            ApiToken::Missing(_) => request,
        };
        self.send(request, url).map_err(|error| match error {
            ClientError::Unauthorized(source) => ClientError::TokenRefused {
                hint: match token {
                    ApiToken::Token(_) => "the token given was refused".to_owned(),
                    ApiToken::Missing(why) => why.clone(),
                },
                source,
            },
            other => other,
        })
    }
}

/// `response`'s JSON body as `T` (`what` names it in errors).
///
/// # Errors
/// [`ClientError::Decode`].
pub fn decode<T: DeserializeOwned>(
    response: Response,
    url: &Url,
    what: &'static str,
) -> Result<T, ClientError> {
    response.json().map_err(|source| ClientError::Decode {
        url: url.clone(),
        what,
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_keep_a_path_prefix_and_encode_every_segment() {
        for (base, segments, want) in [
            (
                "http://host:1/weir",
                &["api", "graph"][..],
                "http://host:1/weir/api/graph",
            ),
            (
                "http://host:1/weir/",
                &["api", "graph"],
                "http://host:1/weir/api/graph",
            ),
            (
                "http://host:1",
                &["api", "graph"],
                "http://host:1/api/graph",
            ),
            (
                "http://host:1/?q=1#f",
                &["api", "graph"],
                "http://host:1/api/graph",
            ),
            (
                "http://host:1",
                &["api", "modes", "kube-system#oops"],
                "http://host:1/api/modes/kube-system%23oops",
            ),
            (
                "http://host:1",
                &["api", "policies", "enforced", "shop", "x#frag"],
                "http://host:1/api/policies/enforced/shop/x%23frag",
            ),
            (
                "http://host:1",
                &["api", "modes", "../../x"],
                "http://host:1/api/modes/..%2F..%2Fx",
            ),
            (
                "http://host:1",
                &["api", "modes", "a?b c%2F"],
                "http://host:1/api/modes/a%3Fb%20c%252F",
            ),
        ] {
            let url = endpoint(&base.parse().unwrap(), segments).unwrap();
            assert_eq!(url.as_str(), want);
        }
        let base: Url = "http://host:1".parse().unwrap();
        for bad in ["", ".", ".."] {
            let error = endpoint(&base, &["api", "modes", bad]).unwrap_err();
            assert!(error.to_string().contains("cannot be a segment"), "{error}");
        }
        assert!(endpoint(&"mailto:a@b".parse().unwrap(), &["api"]).is_err());
    }

    /// A server on a local port answering each connection with `status`
    /// and `body`, once per entry.
    fn answer(replies: Vec<(u16, &'static str)>) -> Url {
        use std::io::{BufRead as _, BufReader, Write as _};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}/", listener.local_addr().unwrap());
        std::thread::spawn(move || {
            for (status, body) in replies {
                let (stream, _) = listener.accept().unwrap();
                let mut reader = BufReader::new(stream);
                let mut line = String::new();
                while reader.read_line(&mut line).unwrap() > 2 {
                    line.clear();
                }
                write!(
                    reader.get_mut(),
                    "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                )
                .unwrap();
            }
        });
        url.parse().unwrap()
    }

    #[test]
    fn errors_tell_the_status_classes_apart_and_keep_their_text() {
        let server = answer(vec![
            (401, r#"{"error":"no token"}"#),
            (403, "{}"),
            (404, r#"{"error":"no such policy"}"#),
            (503, "not json"),
            (401, r#"{"error":"wrong token"}"#),
            (200, "[1]"),
        ]);
        let client = Client::new().unwrap();
        let url = endpoint(&server, &["api", "x"]).unwrap();
        let chain = |e: ClientError| format!("{:#}", anyhow::Error::new(e));
        let e = client.get(&url).unwrap_err();
        assert!(matches!(e, ClientError::Unauthorized(_)), "{e:?}");
        assert_eq!(chain(e), format!("{url}: no token: HTTP 401"));
        let e = client.get(&url).unwrap_err();
        assert!(matches!(e, ClientError::Forbidden(_)), "{e:?}");
        assert_eq!(chain(e), format!("{url}: 403 Forbidden: HTTP 403"));
        let e = client.get(&url).unwrap_err();
        assert!(matches!(e, ClientError::Rejected(_)), "{e:?}");
        assert_eq!(chain(e), format!("{url}: no such policy: HTTP 404"));
        let e = client.get(&url).unwrap_err();
        assert!(matches!(e, ClientError::Failed(_)), "{e:?}");
        assert_eq!(
            chain(e),
            format!("{url}: 503 Service Unavailable: HTTP 503")
        );
        let token = ApiToken::Missing("no token file".to_owned());
        let e = client.change(client.put(&url), &url, &token).unwrap_err();
        assert!(matches!(e, ClientError::TokenRefused { .. }), "{e:?}");
        assert_eq!(
            chain(e),
            format!(
                "the agent refused the change: it needs its API token (no token file); pass \
                 --token, set WEIR_TOKEN, or point --token-file at the agent's \
                 <state-dir>/api-token (printed in its log at start): {url}: wrong token: HTTP 401"
            )
        );
        let e = client.get_json::<String>(&url, "a name").unwrap_err();
        assert!(matches!(e, ClientError::Decode { .. }), "{e:?}");
        assert!(
            chain(e).starts_with(&format!("{url} did not answer with a name: ")),
            "decode"
        );
    }

    #[test]
    fn errors_tell_a_closed_port_from_a_silent_agent() {
        let closed = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        let url: Url = format!("http://{closed}/api/graph").parse().unwrap();
        let e = Client::new().unwrap().get(&url).unwrap_err();
        assert!(matches!(e, ClientError::Unreachable { .. }), "{e:?}");
        assert!(
            e.to_string().starts_with(&format!(
                "cannot reach the weir agent at {url} (is `weir agent` running? see --server)"
            )),
            "{e}"
        );

        // Accepts, never answers.
        let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url: Url = format!("http://{}/api/graph", silent.local_addr().unwrap())
            .parse()
            .unwrap();
        let client = Client::with_timeout(Some(Duration::from_millis(200))).unwrap();
        let e = client.get(&url).unwrap_err();
        assert!(matches!(e, ClientError::Timeout { .. }), "{e:?}");
        assert!(
            e.to_string().starts_with("cannot reach the weir agent"),
            "{e}"
        );
        drop(silent);
    }

    #[test]
    fn tokens_come_from_the_flag_then_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("t");
        let args = |token: Option<&str>| TokenArgs {
            token: token.map(str::to_owned),
            token_file: file.clone(),
        };
        assert!(
            matches!(args(None).resolve(), ApiToken::Missing(why) if why.contains("cannot be read"))
        );
        std::fs::write(&file, "  \n").unwrap();
        assert!(matches!(args(None).resolve(), ApiToken::Missing(why) if why.contains("empty")));
        std::fs::write(&file, "from-file\n").unwrap();
        assert_eq!(args(None).resolve(), ApiToken::Token("from-file".into()));
        assert_eq!(
            args(Some(" flag ")).resolve(),
            ApiToken::Token("flag".into())
        );
        assert_eq!(
            args(Some("")).resolve(),
            ApiToken::Token("from-file".into())
        );
    }
}
