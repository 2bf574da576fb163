//! A Kubernetes API for unit tests: a [`Client`] over tower-test's mock
//! service that records every request and answers it with its own body
//! (what the API server returns for a patch or a create), without the
//! fields a merge patch removes.

use http::{Request, Response};
use kube::{Client, client::Body};
use tower_test::mock;

/// One request: (method, path, query, content type, JSON body).
pub(crate) type Captured = (String, String, String, String, serde_json::Value);

/// Run `run` with a client of the mock API; hand back its result and
/// every request it made, in order (the mock serves until the client and
/// its clones are dropped).
pub(crate) async fn serve<T>(run: impl AsyncFnOnce(Client) -> T) -> (T, Vec<Captured>) {
    let (service, mut handle) = mock::pair::<Request<Body>, Response<Body>>();
    let server = tokio::spawn(async move {
        let mut seen = Vec::new();
        while let Some((request, send)) = handle.next_request().await {
            let (parts, body) = request.into_parts();
            let body = body.collect_bytes().await.expect("a body");
            let json: serde_json::Value = serde_json::from_slice(&body).expect("JSON");
            seen.push((
                parts.method.to_string(),
                parts.uri.path().to_owned(),
                parts.uri.query().unwrap_or_default().to_owned(),
                parts
                    .headers
                    .get("content-type")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or_default()
                    .to_owned(),
                json.clone(),
            ));
            // A merge patch's `null` removes a field: the object has none.
            let mut answer = json;
            drop_nulls(&mut answer);
            send.send_response(
                Response::builder()
                    .body(Body::from(answer.to_string().into_bytes()))
                    .expect("response"),
            );
        }
        seen
    });
    let result = run(Client::new(service, "default")).await;
    (result, server.await.expect("the mock API server"))
}

fn drop_nulls(value: &mut serde_json::Value) {
    if let serde_json::Value::Object(map) = value {
        map.retain(|_, v| !v.is_null());
        map.values_mut().for_each(drop_nulls);
    }
}
