//! A fast stand-in for a master or worker process, for `scripts/bench`: the
//! same contract as tests/fixtures/worker.py (`--port`, `--ready-after`,
//! `/health` 503 then 200, `READY=1` to systemd for `Type=notify`), but it
//! starts in a millisecond, so a benchmark on a small machine measures orch
//! and systemd rather than 256 Python interpreters starting at once.
//!
//! Build: `cargo build --release --example fixture_worker`.

use std::io::{Read, Write};
use std::net::TcpListener;
use std::os::unix::net::UnixDatagram;
use std::time::{Duration, Instant};

fn main() {
    let mut port = None;
    let mut ready_after = 0.0f64;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--port" => port = args.next().and_then(|v| v.parse::<u16>().ok()),
            "--ready-after" => {
                ready_after = args.next().and_then(|v| v.parse().ok()).unwrap_or(0.0)
            }
            // Accepted for compatibility with worker.py; unused here.
            "--name" | "--log" => {
                args.next();
            }
            other => eprintln!("fixture_worker: ignoring {other}"),
        }
    }
    let started = Instant::now();
    let ready_at = started + Duration::from_secs_f64(ready_after);

    // Tell systemd when ready (Type=notify), from a thread so /health answers meanwhile.
    std::thread::spawn(move || {
        std::thread::sleep(ready_at.saturating_duration_since(Instant::now()));
        if let Ok(path) = std::env::var("NOTIFY_SOCKET") {
            if let Ok(sock) = UnixDatagram::unbound() {
                let r = if let Some(abstract_name) = path.strip_prefix('@') {
                    use std::os::linux::net::SocketAddrExt;
                    std::os::unix::net::SocketAddr::from_abstract_name(abstract_name)
                        .and_then(|a| sock.send_to_addr(b"READY=1", &a))
                } else {
                    sock.send_to(b"READY=1", &path)
                };
                if let Err(e) = r {
                    eprintln!("fixture_worker: notify: {e}");
                }
            }
        }
    });

    let Some(port) = port else {
        loop {
            std::thread::sleep(Duration::from_secs(3600));
        }
    };
    let listener = TcpListener::bind(("127.0.0.1", port)).expect("bind");
    for stream in listener.incoming() {
        let Ok(mut s) = stream else { continue };
        std::thread::spawn(move || {
            let mut buf = [0u8; 1024];
            let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
            let n = s.read(&mut buf).unwrap_or(0);
            let ok = buf[..n].starts_with(b"GET /health ") && Instant::now() >= ready_at;
            let status = if ok {
                "200 OK"
            } else {
                "503 Service Unavailable"
            };
            let _ = write!(
                s,
                "HTTP/1.1 {status}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
            );
        });
    }
}
