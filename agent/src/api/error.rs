//! API errors: each a status code and a JSON body `{"error": "..."}`.
//! Messages name what the client got wrong and never carry internal
//! details; nothing is logged here (the caller decides what is worth a log).

use axum::{
    Json,
    http::StatusCode,
    response::{IntoResponse, Response},
};

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
    /// Something failed inside the agent (details are in its log).
    #[error("internal error")]
    Internal,
    /// No such path.
    #[error("no such path: {path}")]
    NotFound {
        /// The path asked for.
        path: String,
    },
}

impl ApiError {
    fn status(&self) -> StatusCode {
        match self {
            Self::BadParameter { .. } | Self::BadQuery { .. } => StatusCode::BAD_REQUEST,
            Self::BadPolicies { .. } | Self::Refused { .. } => StatusCode::UNPROCESSABLE_ENTITY,
            Self::NotFound { .. } | Self::UnknownNamespace { .. } | Self::UnknownPolicy { .. } => {
                StatusCode::NOT_FOUND
            }
            Self::EnforcementUnavailable => StatusCode::SERVICE_UNAVAILABLE,
            Self::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = serde_json::json!({ "error": self.to_string() });
        (self.status(), Json(body)).into_response()
    }
}
