//! Request limits, enforced before any handler runs, each refusal a JSON
//! error naming the limit:
//!
//! - a request URI longer than [`MAX_URI_BYTES`]: 414;
//! - more than [`MAX_HEADERS`] header fields, or more than
//!   [`MAX_HEADER_BYTES`] of them: 431;
//! - a body larger than `max_body` (`--max-body-size`): 413, at once when
//!   its `Content-Length` says so, else as soon as it has sent more;
//! - a body not received within `body_read_timeout`
//!   (`--body-read-timeout`): 408.
//!
//! Bodies are read here, whole, before the handler runs (every handler
//! reads its body whole anyway), so that one deadline and one size limit
//! cover them all. At most [`BODY_BUDGET`] bodies of the largest size are
//! held at once: each body takes its share of `BODY_BUDGET * max_body`
//! until its handler answered, and a body that does not fit waits.

use std::{sync::Arc, time::Duration};

use axum::{
    body::{Body, HttpBody as _},
    extract::{Request, State},
    http::{HeaderMap, header},
    middleware::Next,
    response::{IntoResponse, Response},
};
use http_body_util::BodyExt as _;
use tokio::sync::Semaphore;

use super::{AppState, error::ApiError};

/// The longest request URI (path and query) answered.
pub const MAX_URI_BYTES: usize = 8 * 1024;

/// The most header fields a request may have.
pub const MAX_HEADERS: usize = 100;

/// The most bytes of header fields (names and values) a request may have.
pub const MAX_HEADER_BYTES: usize = 32 * 1024;

/// How many bodies of the largest size may be held at once.
pub const BODY_BUDGET: usize = 4;

/// `--max-body-size`: a YAML stream of as many minimal one-rule
/// NetworkPolicies (about 256 bytes each) as the largest rule map
/// (POLICY_EXACT, 262,144 entries) holds.
pub const DEFAULT_MAX_BODY: usize = 64 * 1024 * 1024;

/// `--body-read-timeout`.
pub const DEFAULT_BODY_READ_TIMEOUT: Duration = Duration::from_secs(60);

/// The request limits of one server.
#[derive(Clone, Debug)]
pub struct RequestLimits {
    max_body: usize,
    body_read_timeout: Duration,
    /// Bytes of bodies held at once, in permits of [`BUDGET_UNIT`] bytes.
    budget: Arc<Semaphore>,
}

/// The bytes one permit of the body budget stands for (permits are `u32`).
const BUDGET_UNIT: usize = 1024;

impl Default for RequestLimits {
    fn default() -> Self {
        Self::new(DEFAULT_MAX_BODY, DEFAULT_BODY_READ_TIMEOUT)
    }
}

impl RequestLimits {
    /// Bodies up to `max_body` bytes, each received within
    /// `body_read_timeout`.
    #[must_use]
    pub fn new(max_body: usize, body_read_timeout: Duration) -> Self {
        let permits = (BODY_BUDGET * units(max_body)).min(Semaphore::MAX_PERMITS);
        Self {
            max_body,
            body_read_timeout,
            budget: Arc::new(Semaphore::new(permits)),
        }
    }

    /// The largest body accepted.
    #[must_use]
    pub fn max_body(&self) -> usize {
        self.max_body
    }

    /// The budget permits of a body of `len` bytes (at most `max_body`).
    fn permits(&self, len: usize) -> u32 {
        u32::try_from(units(len.min(self.max_body))).unwrap_or(u32::MAX)
    }
}

fn units(bytes: usize) -> usize {
    bytes.div_ceil(BUDGET_UNIT).max(1)
}

/// The first limit the head of a request exceeds.
fn check_head(request: &Request) -> Result<(), ApiError> {
    let uri = request.uri();
    let uri_len = uri.path_and_query().map_or(0, |pq| pq.as_str().len())
        + uri.authority().map_or(0, |a| a.as_str().len());
    if uri_len > MAX_URI_BYTES {
        return Err(ApiError::UriTooLong {
            len: uri_len,
            limit: MAX_URI_BYTES,
        });
    }
    let headers = request.headers();
    if headers.len() > MAX_HEADERS {
        return Err(ApiError::HeadersTooLarge {
            what: format!("{} header fields", headers.len()),
            limit: format!("{MAX_HEADERS} fields"),
        });
    }
    let bytes = header_bytes(headers);
    if bytes > MAX_HEADER_BYTES {
        return Err(ApiError::HeadersTooLarge {
            what: format!("{bytes} bytes of header fields"),
            limit: format!("{MAX_HEADER_BYTES} bytes"),
        });
    }
    Ok(())
}

fn header_bytes(headers: &HeaderMap) -> usize {
    headers
        .iter()
        .map(|(name, value)| name.as_str().len() + value.len())
        .sum()
}

/// The body's declared length, if any.
fn content_length(headers: &HeaderMap) -> Option<u64> {
    headers
        .get(header::CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .parse()
        .ok()
}

/// Refuse requests over the limits; read bodies whole within their deadline.
pub async fn limit(State(state): State<AppState>, request: Request, next: Next) -> Response {
    if let Err(error) = check_head(&request) {
        return error.into_response();
    }
    let limits = &state.limits;
    let (parts, body) = request.into_parts();
    if body.size_hint().exact() == Some(0) {
        return next.run(Request::from_parts(parts, body)).await;
    }
    let too_large = ApiError::BodyTooLarge {
        limit: limits.max_body,
    };
    let declared = content_length(&parts.headers);
    if declared.is_some_and(|len| len > limits.max_body as u64) {
        return too_large.into_response();
    }
    let expected = declared.map_or(limits.max_body, |len| {
        usize::try_from(len).unwrap_or(usize::MAX)
    });
    // Never closed: waiting only ends with a permit.
    let _held = match limits.budget.acquire_many(limits.permits(expected)).await {
        Ok(held) => held,
        Err(error) => {
            return ApiError::internal("the request body budget is closed", error).into_response();
        }
    };
    let read = http_body_util::Limited::new(body, limits.max_body).collect();
    let bytes = match tokio::time::timeout(limits.body_read_timeout, read).await {
        Err(_) => {
            return ApiError::BodyTimeout {
                after: limits.body_read_timeout,
            }
            .into_response();
        }
        Ok(Err(error)) if error.is::<http_body_util::LengthLimitError>() => {
            return too_large.into_response();
        }
        Ok(Err(error)) => {
            return ApiError::BadBody {
                reason: format!("cannot read it: {error}"),
            }
            .into_response();
        }
        Ok(Ok(collected)) => collected.to_bytes(),
    };
    next.run(Request::from_parts(parts, Body::from(bytes)))
        .await
}
