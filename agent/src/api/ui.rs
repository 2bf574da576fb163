//! The UI's static files, embedded in the binary so the agent is one
//! artifact (no build step: web/ holds plain ES modules, see
//! web/README.md); a directory can replace them for UI development
//! (`AppState::with_web_dir`).
//!
//! HTML is served with a strict Content-Security-Policy: scripts, styles,
//! workers and requests only from the agent itself, nothing inline, no
//! framing, no forms, no `<base>`.

use std::path::Path;

use axum::{
    http::{HeaderValue, header},
    response::{IntoResponse, Response},
};

use crate::api::error::ApiError;

/// The policy of every HTML page.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; \
    style-src 'self'; img-src 'self' data:; connect-src 'self'; base-uri 'none'; \
    form-action 'none'; frame-ancestors 'none'";

const HTML: &str = "text/html; charset=utf-8";
const JS: &str = "text/javascript; charset=utf-8";
const CSS: &str = "text/css; charset=utf-8";
const SVG: &str = "image/svg+xml";

/// One embedded file: its URL name (flat: `/{name}`), its path under web/,
/// content type and bytes.
struct Asset {
    name: &'static str,
    path: &'static str,
    content_type: &'static str,
    bytes: &'static [u8],
}

macro_rules! asset {
    ($name:literal, $path:literal, $type:expr) => {
        Asset {
            name: $name,
            path: $path,
            content_type: $type,
            bytes: include_bytes!(concat!("../../../web/", $path)),
        }
    };
}

/// Every file the UI loads. `web_assets_are_complete` (below) fails when a
/// file of web/ is missing here.
const ASSETS: &[Asset] = &[
    asset!("index.html", "index.html", HTML),
    asset!("style.css", "style.css", CSS),
    asset!("favicon.svg", "favicon.svg", SVG),
    asset!("app.js", "app.js", JS),
    asset!("client.js", "client.js", JS),
    asset!("dom.js", "dom.js", JS),
    asset!("graph.js", "graph.js", JS),
    asset!("layout.js", "layout.js", JS),
    asset!("layout-worker.js", "layout-worker.js", JS),
    asset!("filters.js", "filters.js", JS),
    asset!("details.js", "details.js", JS),
    asset!("policies.js", "policies.js", JS),
    asset!("modes.js", "modes.js", JS),
    asset!("pending.js", "pending.js", JS),
    asset!("coverage.js", "coverage.js", JS),
    asset!("cytoscape.esm.min.mjs", "vendor/cytoscape.esm.min.mjs", JS),
];

/// The embedded file `name`, with its content type.
#[must_use]
pub fn embedded(name: &str) -> Option<(&'static str, &'static [u8])> {
    find(name).map(|a| (a.content_type, a.bytes))
}

fn find(name: &str) -> Option<&'static Asset> {
    ASSETS.iter().find(|a| a.name == name)
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
    let asset = find(name).ok_or_else(not_found)?;
    let body = match dir {
        Some(dir) => tokio::fs::read(dir.join(asset.path))
            .await
            .map_err(|_| not_found())?,
        None => asset.bytes.to_vec(),
    };
    let mut response = ([(header::CONTENT_TYPE, asset.content_type)], body).into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    if asset.content_type == HTML {
        headers.insert(
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(CONTENT_SECURITY_POLICY),
        );
        headers.insert(
            header::REFERRER_POLICY,
            HeaderValue::from_static("no-referrer"),
        );
        // The page is small and changes with the binary: always revalidate.
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    }
    Ok(response)
}

#[cfg(test)]
mod tests {
    use std::{collections::BTreeSet, path::PathBuf};

    use super::*;

    fn web_dir() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../web")
    }

    fn text(name: &str) -> String {
        String::from_utf8(embedded(name).expect(name).1.to_vec()).expect("UTF-8")
    }

    /// Every file of web/ the UI could load is embedded (docs and the
    /// vendored licence excepted).
    #[test]
    fn web_assets_are_complete() {
        let mut on_disk = BTreeSet::new();
        for dir in [web_dir(), web_dir().join("vendor")] {
            for entry in std::fs::read_dir(&dir).expect("web/") {
                let path = entry.expect("entry").path();
                let name = path
                    .file_name()
                    .expect("name")
                    .to_string_lossy()
                    .into_owned();
                let servable = [".html", ".js", ".mjs", ".css", ".svg", ".png"]
                    .iter()
                    .any(|ext| name.ends_with(ext));
                if path.is_file() && servable {
                    let relative = path.strip_prefix(web_dir()).expect("under web/");
                    on_disk.insert(relative.to_string_lossy().into_owned());
                }
            }
        }
        let embedded: BTreeSet<String> = ASSETS.iter().map(|a| a.path.to_owned()).collect();
        assert_eq!(on_disk, embedded, "web/ and ASSETS differ");
    }

    /// Every relative import of a module names an embedded file.
    #[test]
    fn module_imports_resolve_to_embedded_files() {
        for asset in ASSETS.iter().filter(|a| a.content_type == JS) {
            let source = String::from_utf8_lossy(asset.bytes);
            for quote in ["'./", "\"./"] {
                for (i, _) in source.match_indices(quote) {
                    let rest = &source[i + quote.len()..];
                    let end = rest.find(['\'', '"']).expect("closing quote");
                    let target = &rest[..end];
                    if target.ends_with(".js") || target.ends_with(".mjs") {
                        assert!(
                            embedded(target).is_some(),
                            "{} imports ./{target}, which is not embedded",
                            asset.name
                        );
                    }
                }
            }
        }
    }

    /// The CSP forbids inline code: the HTML must have none.
    #[test]
    fn html_has_no_inline_script_or_style() {
        let html = text("index.html");
        assert!(!html.contains("<style"), "inline <style>");
        assert!(!html.contains(" style="), "style attribute");
        for (i, _) in html.match_indices("<script") {
            let tag = &html[i..i + html[i..].find('>').expect("tag end")];
            assert!(tag.contains(" src="), "inline script: {tag}");
        }
        assert!(
            !html.contains(" onclick=") && !html.contains(" onload="),
            "inline handler"
        );
        // cytoscape.js injects a <style> unless it finds this id.
        assert!(html.contains("id=\"__________cytoscape_stylesheet\""));
        assert!(text("style.css").contains(".__________cytoscape_container"));
    }

    #[tokio::test]
    async fn html_carries_the_content_security_policy() {
        let response = serve(None, "index.html").await.expect("index");
        let csp = response
            .headers()
            .get(header::CONTENT_SECURITY_POLICY)
            .expect("CSP header");
        assert_eq!(csp, CONTENT_SECURITY_POLICY);
        assert!(!CONTENT_SECURITY_POLICY.contains("unsafe"));
        let js = serve(None, "app.js").await.expect("app.js");
        assert_eq!(js.headers()[header::CONTENT_TYPE], JS);
        assert!(js.headers().get(header::CONTENT_SECURITY_POLICY).is_none());
    }

    #[tokio::test]
    async fn a_web_dir_serves_only_embedded_names() {
        let served = serve(Some(&web_dir()), "cytoscape.esm.min.mjs")
            .await
            .expect("vendored module from the directory");
        assert_eq!(served.headers()[header::CONTENT_TYPE], JS);
        assert!(serve(Some(&web_dir()), "README.md").await.is_err());
        assert!(serve(None, "../Cargo.toml").await.is_err());
    }
}
