use std::{os::unix::fs::PermissionsExt as _, path::Path, sync::Arc, time::Duration};

use rustls::pki_types::ServerName;
use tokio::net::{TcpListener, TcpStream};

use super::{generate, *};

const YEAR: Duration = Duration::from_secs(365 * 86_400);

/// `weir certs --out DIR --node a --node b` into a temporary directory.
fn certs_dir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let certs = generate::generate(
        &["a".to_owned(), "b".to_owned()],
        YEAR,
        time::OffsetDateTime::now_utc(),
    )
    .unwrap();
    generate::write(&certs, dir.path(), false).unwrap();
    dir
}

#[test]
fn certs_lay_out_every_end_with_private_keys() {
    let dir = certs_dir();
    let root = dir.path();
    for end in ["agents/a", "agents/b", "relay"] {
        for file in [CERT_FILE, KEY_FILE, CA_FILE] {
            assert!(root.join(end).join(file).is_file(), "{end}/{file}");
        }
        let mode = std::fs::metadata(root.join(end).join(KEY_FILE))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "{end}/tls.key");
        assert_eq!(
            std::fs::read(root.join(end).join(CA_FILE)).unwrap(),
            std::fs::read(root.join(CA_FILE)).unwrap()
        );
        TlsDir::load(&root.join(end))
            .unwrap()
            .server_config()
            .unwrap();
    }
    let mode = std::fs::metadata(root.join("ca.key"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
}

#[test]
fn an_existing_ca_is_replaced_only_when_forced() {
    let dir = certs_dir();
    let before = std::fs::read(dir.path().join(CA_FILE)).unwrap();
    let again =
        generate::generate(&["a".to_owned()], YEAR, time::OffsetDateTime::now_utc()).unwrap();
    let error = generate::write(&again, dir.path(), false).unwrap_err();
    assert!(matches!(error, TlsError::CaExists { .. }), "{error}");
    assert!(error.to_string().contains("ca.crt exists"), "{error}");
    assert_eq!(std::fs::read(dir.path().join(CA_FILE)).unwrap(), before);
    generate::write(&again, dir.path(), true).unwrap();
    assert_ne!(std::fs::read(dir.path().join(CA_FILE)).unwrap(), before);
}

#[test]
fn node_names_must_make_dns_names() {
    for bad in ["", "A", "a_b", "-a", "a..b", "a b", &"x".repeat(64)] {
        let error = generate::generate(&[bad.to_owned()], YEAR, time::OffsetDateTime::now_utc())
            .unwrap_err();
        assert!(
            matches!(error, TlsError::NodeName { .. }),
            "{bad:?}: {error}"
        );
    }
    assert!(generate::is_node_name("ip-10-0-0-1.ec2.internal"));
}

fn load_error(dir: &Path) -> String {
    crate::error_chain::chain(&TlsDir::load(dir).unwrap_err())
}

#[test]
fn bad_files_are_named() {
    let dir = certs_dir();
    let a = dir.path().join("agents/a");

    std::fs::remove_file(a.join(CA_FILE)).unwrap();
    let error = load_error(&a);
    assert!(
        error.starts_with(&format!("cannot read {}", a.join(CA_FILE).display())),
        "{error}"
    );

    std::fs::write(a.join(CA_FILE), "not a certificate\n").unwrap();
    let error = load_error(&a);
    assert_eq!(
        error,
        format!("{}: no PEM certificate in it", a.join(CA_FILE).display())
    );

    std::fs::write(
        a.join(CA_FILE),
        "-----BEGIN CERTIFICATE-----\n!!!!\n-----END CERTIFICATE-----\n",
    )
    .unwrap();
    let error = load_error(&a);
    assert!(
        error.starts_with(&format!(
            "{}: not PEM certificates",
            a.join(CA_FILE).display()
        )),
        "{error}"
    );

    std::fs::copy(dir.path().join(CA_FILE), a.join(CA_FILE)).unwrap();
    std::fs::copy(a.join(CERT_FILE), a.join(KEY_FILE)).unwrap();
    let error = load_error(&a);
    assert!(
        error.starts_with(&format!(
            "{}: no PEM private key",
            a.join(KEY_FILE).display()
        )),
        "{error}"
    );

    // b's key with a's certificate.
    std::fs::copy(dir.path().join("agents/b").join(KEY_FILE), a.join(KEY_FILE)).unwrap();
    let error = crate::error_chain::chain(&TlsDir::load(&a).unwrap().server_config().unwrap_err());
    assert_eq!(
        error,
        format!(
            "{}: the key does not match the certificate in {}",
            a.join(KEY_FILE).display(),
            a.join(CERT_FILE).display()
        )
    );
}

#[test]
fn discovered_urls_give_addresses() {
    assert_eq!(
        agent_address("https://10.0.0.2:4244").unwrap(),
        "10.0.0.2:4244".parse().unwrap()
    );
    assert_eq!(
        agent_address("https://[fd00::2]:4244/").unwrap(),
        "[fd00::2]:4244".parse().unwrap()
    );
    for bad in [
        "http://10.0.0.2:4244",
        "https://10.0.0.2",
        "https://node:4244",
    ] {
        assert!(agent_address(bad).is_err(), "{bad}");
    }
    assert_eq!(agent_url("b", 4244), "https://b.agents.weir.internal:4244");
}

/// A TLS handshake from a client with `client_dir`'s identity to a server
/// with `server_dir`'s, the client expecting `server_name`: whether both
/// ends complete it (TLS 1.3 settles the client certificate after the
/// client's handshake, so the client reads until the server answers).
async fn handshake(server_dir: &Path, client_dir: &Path, server_name: &str) -> Result<(), String> {
    let server = tokio_rustls::TlsAcceptor::from(server_config(server_dir).unwrap());
    let client = tokio_rustls::TlsConnector::from(Arc::new(
        TlsDir::load(client_dir).unwrap().client_config().unwrap(),
    ));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let serving = tokio::spawn(async move {
        let (stream, _) = listener.accept().await.unwrap();
        let mut stream = server.accept(stream).await.map_err(|e| e.to_string())?;
        tokio::io::AsyncWriteExt::write_all(&mut stream, b"ok")
            .await
            .map_err(|e| e.to_string())?;
        tokio::io::AsyncWriteExt::shutdown(&mut stream).await.ok();
        Ok::<_, String>(())
    });
    let name = ServerName::try_from(server_name.to_owned()).unwrap();
    let stream = TcpStream::connect(addr).await.unwrap();
    let client_side = async {
        let mut stream = client
            .connect(name, stream)
            .await
            .map_err(|e| e.to_string())?;
        let mut answer = Vec::new();
        tokio::io::AsyncReadExt::read_to_end(&mut stream, &mut answer)
            .await
            .map_err(|e| e.to_string())?;
        if answer == b"ok" {
            Ok(())
        } else {
            Err(format!("the server answered {answer:?}"))
        }
    }
    .await;
    let server_side = serving.await.unwrap();
    client_side.and(server_side)
}

#[tokio::test]
async fn both_ends_check_the_other_against_the_ca_and_the_name() {
    let ours = certs_dir();
    let theirs = certs_dir();
    let agent_a = ours.path().join("agents/a");
    let relay = ours.path().join("relay");

    handshake(&agent_a, &relay, "a.agents.weir.internal")
        .await
        .unwrap();
    // Node a's certificate where node b is expected.
    let error = handshake(&agent_a, &relay, "b.agents.weir.internal")
        .await
        .unwrap_err();
    assert!(error.contains("certificate not valid for name"), "{error}");
    // A relay certificate from another CA.
    let error = handshake(
        &agent_a,
        &theirs.path().join("relay"),
        "a.agents.weir.internal",
    )
    .await
    .unwrap_err();
    assert!(
        error.contains("UnknownIssuer") || error.contains("unknown"),
        "{error}"
    );
    // An agent from another CA.
    let error = handshake(
        &theirs.path().join("agents/a"),
        &relay,
        "a.agents.weir.internal",
    )
    .await
    .unwrap_err();
    assert!(error.contains("UnknownIssuer"), "{error}");
}

/// One HTTP/1.1 answer, `ok`, over TLS with `server_dir`'s identity, to
/// one connection.
async fn one_https_answer(server_dir: &Path) -> std::net::SocketAddr {
    let server = tokio_rustls::TlsAcceptor::from(server_config(server_dir).unwrap());
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let (stream, _) = listener.accept().await.unwrap();
        let mut stream = server.accept(stream).await.unwrap();
        let mut head = [0_u8; 1024];
        let _ = tokio::io::AsyncReadExt::read(&mut stream, &mut head).await;
        tokio::io::AsyncWriteExt::write_all(
            &mut stream,
            b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok",
        )
        .await
        .unwrap();
        tokio::io::AsyncWriteExt::shutdown(&mut stream).await.ok();
    });
    addr
}

#[tokio::test]
async fn the_relay_client_reaches_an_agent_by_name_at_its_address() {
    let dir = certs_dir();
    let addr = one_https_answer(&dir.path().join("agents/b")).await;
    let tls = RelayTls::load(&dir.path().join("relay")).unwrap();
    let client = tls.agent_client("b", addr).unwrap();
    let answer = client
        .get(format!("{}/healthz", agent_url("b", addr.port())))
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 200);
    assert_eq!(answer.text().await.unwrap(), "ok");

    // https only: the client never speaks in the clear.
    let error = relay_client(&dir.path().join("relay"))
        .unwrap()
        .get(format!("http://{addr}/healthz"))
        .send()
        .await
        .unwrap_err();
    assert!(error.is_builder(), "{error}");
}

#[test]
fn a_dotted_node_name_is_one_label_under_the_agents_domain() {
    assert_eq!(
        agent_server_name("ip-10-0-1-2.ec2.internal"),
        "ip-10-0-1-2-ec2-internal.agents.weir.internal"
    );
    assert_eq!(agent_server_name("node-a"), "node-a.agents.weir.internal");
}

#[test]
fn a_certificate_names_its_node_only() {
    let dir = certs_dir();
    let a = TlsDir::load(&dir.path().join("agents/a")).unwrap();
    a.check_name(&agent_server_name("a")).unwrap();
    let error = a.check_name(&agent_server_name("b")).unwrap_err();
    assert!(
        error.to_string().starts_with(&format!(
            "{}: the certificate is not valid for b.agents.weir.internal",
            dir.path().join("agents/a/tls.crt").display()
        )),
        "{error}"
    );
}
