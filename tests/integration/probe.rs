//! Probes never wait on a black-holed address when another one answers.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use orch::health::connect_addrs;
use tokio::net::{TcpListener, TcpSocket, TcpStream};

/// A listener on 127.0.0.2 whose accept queue is full: the kernel drops
/// further SYNs, so a connect hangs exactly like a black-holed route.
async fn black_hole() -> (TcpListener, Vec<TcpStream>, SocketAddr) {
    let sock = TcpSocket::new_v4().unwrap();
    sock.bind("127.0.0.2:0".parse().unwrap()).unwrap();
    let listener = sock.listen(0).unwrap();
    let addr = listener.local_addr().unwrap();
    let mut held = Vec::new();
    // Fill the queue: connects succeed until it is full, then one hangs.
    loop {
        match tokio::time::timeout(Duration::from_millis(300), TcpStream::connect(addr)).await {
            Ok(Ok(s)) => held.push(s),
            Ok(Err(e)) => panic!("unexpected connect error {e}"),
            Err(_) => break,
        }
        assert!(held.len() < 16, "the accept queue never filled");
    }
    (listener, held, addr)
}

#[tokio::test]
async fn black_holed_first_address_does_not_delay_the_second() {
    let (_bh, _held, dead) = black_hole().await;
    let good = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let alive = good.local_addr().unwrap();
    let connect_timeout = Duration::from_secs(3);

    // Control: the black hole alone really hangs until the connect timeout.
    let t = Instant::now();
    let err = connect_addrs(&[dead], Duration::from_millis(800))
        .await
        .unwrap_err();
    assert!(
        t.elapsed() >= Duration::from_millis(750),
        "black hole answered after {:?}: {err}",
        t.elapsed()
    );
    assert!(err.to_string().contains("no answer"), "{err}");

    // Dead address first, working one second: healthy in well under the timeout.
    let t = Instant::now();
    connect_addrs(&[dead, alive], connect_timeout)
        .await
        .expect("second address works");
    let took = t.elapsed();
    assert!(
        took < connect_timeout / 10,
        "took {took:?}; the first address's connect timeout is {connect_timeout:?}"
    );
}

#[tokio::test]
async fn http_probe_on_localhost_answers_over_any_address() {
    // `localhost` may resolve to ::1 first with nothing listening there; the
    // probe must still find 127.0.0.1 at once.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let (mut s, _) = listener.accept().await.unwrap();
        let mut buf = [0u8; 256];
        let _ = s.read(&mut buf).await;
        s.write_all(b"HTTP/1.1 204 No Content\r\n\r\n")
            .await
            .unwrap();
    });
    let probe = orch::model::parse_probe(&format!("http://localhost:{port}/health")).unwrap();
    let t = Instant::now();
    orch::health::check(&probe, Default::default(), None)
        .await
        .unwrap();
    assert!(
        t.elapsed() < Duration::from_millis(500),
        "{:?}",
        t.elapsed()
    );
}
