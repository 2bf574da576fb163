//! API errors: each a status code and a JSON body `{"error": "...",
//! "status": CODE}`.
//! Messages name what the client got wrong and never carry internal
//! details. Nothing is logged where an error is made: [`log`], a
//! middleware, logs every error answer once with the request's method,
//! route and status, and the cause of a 500, which the client never sees.

use std::sync::Arc;

use axum::{
    Json,
    extract::{
        MatchedPath, Request,
        rejection::{JsonRejection, PathRejection, QueryRejection, StringRejection},
    },
    http::{StatusCode, header},
    middleware::Next,
    response::{IntoResponse, Response},
};
use tracing::{debug, error, warn};

use crate::error_chain::chain;

/// A request the API cannot answer.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ApiError {
    /// A query parameter has a bad value.
    #[error("bad query parameter `{name}`: {reason}")]
    BadParameter {
        /// The parameter.
        name: &'static str,
        /// What is wrong with it.
        reason: String,
    },
    /// A field of a JSON request body has a bad value.
    #[error("bad request body: field `{name}`: {reason}")]
    BadField {
        /// The field.
        name: &'static str,
        /// What is wrong with it.
        reason: String,
    },
    /// The query string does not parse (unknown or repeated parameter).
    #[error("bad query: {reason}")]
    BadQuery {
        /// The parser's message, which names the parameter.
        reason: String,
    },
    /// A request body that is not a valid set of NetworkPolicies.
    #[error("bad policies: {reason}")]
    BadPolicies {
        /// What is wrong, naming the document, the policy and the field.
        reason: String,
    },
    /// A namespace neither the cluster nor the graph knows.
    #[error("no such namespace: {namespace}")]
    UnknownNamespace {
        /// The namespace asked for.
        namespace: String,
    },
    /// A change to the enforced policies or modes was refused: nothing
    /// changed (an invalid set, a map over its limit).
    #[error("refused: {reason}")]
    Refused {
        /// Why, naming the policy and field, or the map and its limit.
        reason: String,
    },
    /// No such enforced policy.
    #[error("no enforced policy {policy}")]
    UnknownPolicy {
        /// `namespace/name`.
        policy: String,
    },
    /// The agent runs without an enforcer (API tests, or it is stopping).
    #[error("enforcement is not available on this agent")]
    EnforcementUnavailable,
    /// Something failed inside the agent: the client hears only that;
    /// [`log`] logs what failed and why.
    #[error("internal error")]
    Internal {
        /// What failed (the log message).
        what: &'static str,
        /// Why.
        #[source]
        source: Cause,
    },
    /// No such path.
    #[error("no such path: {path}")]
    NotFound {
        /// The path asked for.
        path: String,
    },
    /// No such node or edge in the graph.
    #[error("no {what} {id} in the graph")]
    NotInGraph {
        /// `node` or `edge`.
        what: &'static str,
        /// The id asked for.
        id: String,
    },
    /// A request body that does not parse.
    #[error("bad request body: {reason}")]
    BadBody {
        /// The parser's message.
        reason: String,
    },
    /// A change without the API token, or with a wrong one.
    #[error("this request changes state: it needs the API token (Authorization: Bearer TOKEN)")]
    Unauthorized,
    /// A change sent from another origin (a page of another site).
    #[error("cross-origin request refused: Origin {origin} is not this agent")]
    CrossOrigin {
        /// The `Origin` header.
        origin: String,
    },
    /// A request URI over the limit.
    #[error("request URI of {len} bytes is longer than the limit of {limit} bytes")]
    UriTooLong {
        /// Its length.
        len: usize,
        /// The limit.
        limit: usize,
    },
    /// Request header fields over the limit.
    #[error("request has {what}, more than the limit of {limit}")]
    HeadersTooLarge {
        /// What the request has (`120 header fields`).
        what: String,
        /// The limit it exceeds (`100 fields`).
        limit: String,
    },
    /// A request body over `--max-body-size`.
    #[error(
        "request body is larger than the agent's limit of {} (weir agent --max-body-size)",
        bytes(*limit)
    )]
    BodyTooLarge {
        /// The limit in bytes.
        limit: usize,
    },
    /// A request body not received within `--body-read-timeout`.
    #[error(
        "request body not received within {} (weir agent --body-read-timeout)",
        humantime::format_duration(*after)
    )]
    BodyTimeout {
        /// The deadline.
        after: std::time::Duration,
    },
    /// A request naming a host this agent does not answer to (DNS
    /// rebinding).
    #[error(
        "host {host:?} is not allowed: this agent answers to its addresses, localhost and the names of --allowed-host"
    )]
    HostNotAllowed {
        /// The `Host` header, shortened.
        host: String,
    },
    /// Any other error status, with the text it came with (axum's own
    /// rejections: method not allowed, body too large, a bad path).
    #[error("{message}")]
    Status {
        /// The status code.
        code: u16,
        /// What went wrong.
        message: String,
    },
}

/// The most characters of a client's value an error message repeats.
pub const MAX_ECHO: usize = 64;

/// `value` cut to [`MAX_ECHO`] characters, saying how long it was: an
/// error message repeats what the client sent, not all of it.
#[must_use]
pub fn shorten(value: &str) -> String {
    match value.char_indices().nth(MAX_ECHO) {
        None => value.to_owned(),
        Some((end, _)) => format!("{}... ({} bytes)", &value[..end], value.len()),
    }
}

/// The longest error message sent: a message that repeats a long value
/// the client sent (a parser's, a policy's) is cut.
pub const MAX_MESSAGE: usize = 2048;

fn cap(message: String) -> String {
    match message.char_indices().nth(MAX_MESSAGE) {
        None => message,
        Some((end, _)) => format!("{}... ({} bytes in all)", &message[..end], message.len()),
    }
}

/// A size as given to `--max-body-size`: `64 MiB`, `1536 bytes`.
fn bytes(n: usize) -> String {
    [("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)]
        .into_iter()
        .find(|(_, unit)| n >= *unit && n.is_multiple_of(*unit))
        .map_or_else(
            || format!("{n} bytes"),
            |(name, unit)| format!("{} {name}", n / unit),
        )
}

impl ApiError {
    /// The status code.
    #[must_use]
    pub fn status(&self) -> StatusCode {
        match self {
            Self::BadParameter { .. }
            | Self::BadQuery { .. }
            | Self::BadBody { .. }
            | Self::BadField { .. } => StatusCode::BAD_REQUEST,
            Self::Unauthorized => StatusCode::UNAUTHORIZED,
            Self::CrossOrigin { .. } | Self::HostNotAllowed { .. } => StatusCode::FORBIDDEN,
            Self::Status { code, .. } => {
                StatusCode::from_u16(*code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
            }
            Self::NotInGraph { .. } => StatusCode::NOT_FOUND,
            Self::BadPolicies { .. } | Self::Refused { .. } => StatusCode::UNPROCESSABLE_ENTITY,
            Self::NotFound { .. } | Self::UnknownNamespace { .. } | Self::UnknownPolicy { .. } => {
                StatusCode::NOT_FOUND
            }
            Self::EnforcementUnavailable => StatusCode::SERVICE_UNAVAILABLE,
            Self::Internal { .. } => StatusCode::INTERNAL_SERVER_ERROR,
            Self::UriTooLong { .. } => StatusCode::URI_TOO_LONG,
            Self::HeadersTooLarge { .. } => StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            Self::BodyTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            Self::BodyTimeout { .. } => StatusCode::REQUEST_TIMEOUT,
        }
    }
}

impl ApiError {
    /// A 500 for the client; `what` and the chain of `source` for the log.
    pub fn internal(
        what: &'static str,
        source: impl std::error::Error + Send + Sync + 'static,
    ) -> Self {
        Self::Internal {
            what,
            source: Cause(Arc::new(source)),
        }
    }
}

/// The cause of an [`ApiError::Internal`]: shared, so the answer can carry
/// it to [`log`]; equal when its chain reads the same.
#[derive(Clone, Debug)]
pub struct Cause(Arc<dyn std::error::Error + Send + Sync>);

impl std::fmt::Display for Cause {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

impl std::error::Error for Cause {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.0.source()
    }
}

impl PartialEq for Cause {
    fn eq(&self, other: &Self) -> bool {
        chain(self) == chain(other)
    }
}

impl Eq for Cause {}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        let body = serde_json::json!({ "error": cap(self.to_string()), "status": status.as_u16() });
        let mut response = if status == StatusCode::UNAUTHORIZED {
            (status, [(header::WWW_AUTHENTICATE, "Bearer")], Json(body)).into_response()
        } else {
            (status, Json(body)).into_response()
        };
        // For `log`, which sees the request too.
        response.extensions_mut().insert(Arc::new(self));
        response
    }
}

/// Log every error answer once: a 500's cause at `error`, other server
/// errors at `warn`, client errors at `debug` (a client's mistake is not
/// the agent's problem, and a scanner must not flood the log).
pub async fn log(request: Request, next: Next) -> Response {
    let method = request.method().clone();
    // The route, not the path: no client-chosen text in the log, except
    // for a path no route matched.
    let route = request.extensions().get::<MatchedPath>().map_or_else(
        || shorten(request.uri().path()),
        |matched| matched.as_str().to_owned(),
    );
    let response = next.run(request).await;
    let Some(api_error) = response.extensions().get::<Arc<ApiError>>() else {
        return response;
    };
    let status = response.status().as_u16();
    match &**api_error {
        ApiError::Internal { what, source } => {
            error!(%method, route, status, error = chain(source), "{what}");
        }
        other if response.status().is_server_error() => {
            warn!(%method, route, status, error = %other, "request failed");
        }
        other => debug!(%method, route, status, error = %other, "request refused"),
    }
    response
}

/// A query string that does not parse (unknown or repeated parameter).
impl From<QueryRejection> for ApiError {
    fn from(rejection: QueryRejection) -> Self {
        Self::BadQuery {
            reason: rejection.body_text(),
        }
    }
}

/// A JSON body that does not parse or has the wrong shape.
impl From<JsonRejection> for ApiError {
    fn from(rejection: JsonRejection) -> Self {
        Self::Status {
            code: rejection.status().as_u16(),
            message: format!("bad request body: {}", rejection.body_text()),
        }
    }
}

/// A path segment that does not decode.
impl From<PathRejection> for ApiError {
    fn from(rejection: PathRejection) -> Self {
        Self::Status {
            code: rejection.status().as_u16(),
            message: rejection.body_text(),
        }
    }
}

/// A body that cannot be read as text (not UTF-8, too large).
impl From<StringRejection> for ApiError {
    fn from(rejection: StringRejection) -> Self {
        Self::Status {
            code: rejection.status().as_u16(),
            message: format!("bad request body: {}", rejection.body_text()),
        }
    }
}
