//! The commands that talk to an agent or a cluster, one module each, over
//! one HTTP client ([`client`]) and one way of printing ([`output`]).
//! They import the API's wire types and the domain; nothing imports them
//! but `cli.rs`.

pub mod audit;
pub mod certs;
pub mod client;
pub mod kube;
pub mod learn;
pub mod observe;
pub mod output;
pub mod pending;
pub mod policy;

#[cfg(test)]
mod observe_tests;

/// Test helpers of the commands.
#[cfg(test)]
mod testing {
    use crate::api::{self, AppState};

    /// Serve `state`'s API on a local port, on a runtime thread of its
    /// own that serves until the test process ends: `http://ADDRESS`.
    pub(super) fn serve(state: AppState) -> String {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        std::thread::spawn(move || {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap()
                .block_on(async move {
                    let listener = tokio::net::TcpListener::from_std(listener).unwrap();
                    axum::serve(listener, api::app(state)).await.unwrap();
                });
        });
        url
    }
}
