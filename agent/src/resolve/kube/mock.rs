//! A scripted Kubernetes API server behind `tower_test::mock`, answering
//! kube-rs's requests with real API JSON (lists, watch event streams,
//! Status errors), for the source's tests.
//!
//! Each resource has a queue of replies, served in order to that
//! resource's requests; a request with no reply queued waits (a watch held
//! open) until the test pushes one. Every request is checked against what
//! its reply expects (a list, or a watch from a given resourceVersion) and
//! recorded.

use std::{
    collections::{BTreeMap, VecDeque},
    sync::{Arc, Mutex, PoisonError},
};

use http::{Request, Response, StatusCode};
use kube::{Client, client::Body};
use serde_json::{Value, json};
use tower_test::mock::{self, SendResponse};

/// What a request gets.
#[derive(Clone, Debug)]
pub enum Reply {
    /// A list request: 200 with this List.
    List(Value),
    /// A watch from `from` (the resourceVersion the client must ask for):
    /// these events, one per line, then the stream ends.
    Watch {
        /// The resourceVersion the request must carry.
        from: String,
        /// `{"type": ..., "object": ...}` events.
        events: Vec<Value>,
    },
    /// An HTTP error with a Status body (any request).
    Status(u16, Value),
    /// The connection breaks (any request).
    Disconnect,
}

/// One request as the server saw it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Seen {
    /// The resource (last path segment).
    pub resource: String,
    /// The whole path (`/apis/GROUP/VERSION/namespaces/NS/RESOURCE`).
    pub path: String,
    /// `watch=true`.
    pub watch: bool,
    /// The `resourceVersion` query parameter.
    pub resource_version: Option<String>,
    /// The whole query.
    pub query: String,
}

/// A request waiting for its reply.
type Parked = (Seen, SendResponse<Response<Body>>);

#[derive(Default)]
struct State {
    replies: BTreeMap<String, VecDeque<Reply>>,
    parked: BTreeMap<String, VecDeque<Parked>>,
    seen: Vec<Seen>,
    violations: Vec<String>,
}

/// The test's side of the server.
#[derive(Clone, Default)]
pub struct ApiServer {
    state: Arc<Mutex<State>>,
}

impl ApiServer {
    /// A client talking to a new server.
    pub fn start() -> (Client, Self) {
        let (service, mut handle) = mock::pair::<Request<Body>, Response<Body>>();
        let server = Self::default();
        let state = Arc::clone(&server.state);
        tokio::spawn(async move {
            while let Some((request, send)) = handle.next_request().await {
                let seen = seen(&request);
                let mut state = state.lock().unwrap_or_else(PoisonError::into_inner);
                state.seen.push(seen.clone());
                match state
                    .replies
                    .get_mut(&seen.resource)
                    .and_then(VecDeque::pop_front)
                {
                    Some(reply) => respond(&mut state, &seen, reply, send),
                    None => state
                        .parked
                        .entry(seen.resource.clone())
                        .or_default()
                        .push_back((seen, send)),
                }
            }
        });
        (Client::new(service, "default"), server)
    }

    /// Queue a reply for `resource`'s next request.
    pub fn push(&self, resource: &str, reply: Reply) {
        let mut state = self.lock();
        let parked = state.parked.get_mut(resource).and_then(VecDeque::pop_front);
        match parked {
            Some((seen, send)) => respond(&mut state, &seen, reply, send),
            None => state
                .replies
                .entry(resource.to_owned())
                .or_default()
                .push_back(reply),
        }
    }

    /// An empty list at resourceVersion 1, the watch then held open.
    pub fn empty(&self, resource: &str, kind: &str) {
        self.push(resource, Reply::List(list(kind, "1", vec![])));
    }

    /// Every request so far for `resource`.
    pub fn seen(&self, resource: &str) -> Vec<Seen> {
        self.lock()
            .seen
            .iter()
            .filter(|s| s.resource == resource)
            .cloned()
            .collect()
    }

    /// Requests that did not match their reply.
    pub fn violations(&self) -> Vec<String> {
        self.lock().violations.clone()
    }

    /// Whether every queued reply was served.
    pub fn drained(&self, resource: &str) -> bool {
        self.lock()
            .replies
            .get(resource)
            .is_none_or(VecDeque::is_empty)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

fn seen(request: &Request<Body>) -> Seen {
    let path = request.uri().path();
    let query = request.uri().query().unwrap_or_default().to_owned();
    let param = |name: &str| {
        query
            .split('&')
            .filter_map(|kv| kv.split_once('='))
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.to_owned())
    };
    Seen {
        resource: path.rsplit('/').next().unwrap_or_default().to_owned(),
        path: path.to_owned(),
        watch: param("watch").as_deref() == Some("true"),
        resource_version: param("resourceVersion"),
        query,
    }
}

fn respond(state: &mut State, seen: &Seen, reply: Reply, send: SendResponse<Response<Body>>) {
    let json_response = |status: u16, body: Vec<u8>| {
        Response::builder()
            .status(StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR))
            .header("content-type", "application/json")
            .body(Body::from(body))
            .expect("a valid response")
    };
    match reply {
        Reply::List(list) => {
            if seen.watch {
                state.violations.push(format!(
                    "{}: expected a list, got a watch ({})",
                    seen.resource, seen.query
                ));
            }
            send.send_response(json_response(200, list.to_string().into_bytes()));
        }
        Reply::Watch { from, events } => {
            if !seen.watch || seen.resource_version.as_deref() != Some(from.as_str()) {
                state.violations.push(format!(
                    "{}: expected a watch from resourceVersion {from}, got {}",
                    seen.resource, seen.query
                ));
            }
            let mut body = String::new();
            for event in events {
                body.push_str(&event.to_string());
                body.push('\n');
            }
            send.send_response(json_response(200, body.into_bytes()));
        }
        Reply::Status(code, status) => {
            send.send_response(json_response(code, status.to_string().into_bytes()));
        }
        Reply::Disconnect => send.send_error(std::io::Error::new(
            std::io::ErrorKind::ConnectionReset,
            "connection reset by peer",
        )),
    }
}

/// A List as the API server sends it (`kind` is the item kind).
pub fn list(kind: &str, resource_version: &str, items: Vec<Value>) -> Value {
    let api_version = items
        .first()
        .and_then(|i| i.get("apiVersion"))
        .cloned()
        .unwrap_or_else(|| json!("v1"));
    json!({
        "kind": format!("{kind}List"),
        "apiVersion": api_version,
        "metadata": {"resourceVersion": resource_version},
        "items": items,
    })
}

/// A watch event, with the object's resourceVersion set to `rv`.
pub fn event(kind: &str, mut object: Value, rv: &str) -> Value {
    object["metadata"]["resourceVersion"] = json!(rv);
    json!({"type": kind, "object": object})
}

/// A BOOKMARK event at `rv`, as the API server sends it (an object of the
/// watched kind with only its resourceVersion).
pub fn bookmark(api_version: &str, kind: &str, rv: &str) -> Value {
    json!({
        "type": "BOOKMARK",
        "object": {"kind": kind, "apiVersion": api_version, "metadata": {"resourceVersion": rv}},
    })
}

/// The ERROR event a watch from a compacted resourceVersion gets.
pub fn gone(rv: &str) -> Value {
    json!({
        "type": "ERROR",
        "object": {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": format!("too old resource version: {rv} (4242)"),
            "reason": "Expired",
            "code": 410,
        },
    })
}

/// A Status body for an HTTP error.
pub fn status(code: u16, reason: &str, message: &str) -> Value {
    json!({
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": code,
    })
}
