//! The UI's static files, embedded in the binary so the agent is one
//! artifact; a directory can replace them for UI development
//! (`AppState::with_web_dir`).

use std::path::Path;

use axum::{
    http::header,
    response::{IntoResponse, Response},
};

use crate::api::error::ApiError;

/// Embedded files: name, content type, bytes.
const ASSETS: &[(&str, &str, &[u8])] = &[(
    "index.html",
    "text/html; charset=utf-8",
    include_bytes!("../../web/index.html"),
)];

/// The embedded file `name`, with its content type.
#[must_use]
pub fn embedded(name: &str) -> Option<(&'static str, &'static [u8])> {
    ASSETS
        .iter()
        .find(|(n, ..)| *n == name)
        .map(|(_, content_type, bytes)| (*content_type, *bytes))
}

/// Serve `name` from `dir` when given, else from the embedded files. Only
/// the embedded names are served either way, so a request can never reach
/// another file of `dir`.
///
/// # Errors
/// [`ApiError::NotFound`] for names that are not UI files, or files
/// missing from `dir`.
pub async fn serve(dir: Option<&Path>, name: &str) -> Result<Response, ApiError> {
    let not_found = || ApiError::NotFound {
        path: format!("/{name}"),
    };
    let (content_type, bytes) = embedded(name).ok_or_else(not_found)?;
    let body = match dir {
        Some(dir) => tokio::fs::read(dir.join(name))
            .await
            .map_err(|_| not_found())?,
        None => bytes.to_vec(),
    };
    Ok(([(header::CONTENT_TYPE, content_type)], body).into_response())
}
