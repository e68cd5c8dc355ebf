//! Reads straight from systemd over its private socket, the way `systemctl`
//! does as root on the local machine: peer to peer, no `Hello`, no
//! dbus-daemon relaying every call. At 1,000 units, `status` makes ~6,000
//! property reads, and dbus-daemon's share of that was the largest part of
//! its time (docs/performance.md, "At scale").

use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::{Bus, Systemd, SystemdError};

/// Where systemd listens for its own tools (root only).
pub const PRIVATE_SOCKET: &str = "/run/systemd/private";

/// Calls in flight at once on the private socket. dbus-daemon's limit of
/// 128 pending replies does not apply there, but systemd answers one call
/// at a time: more in flight would only fill its socket buffer and orch's
/// memory.
pub const MAX_DIRECT_CALLS: usize = 256;

/// The private socket status reads try on this machine: the one given
/// (`--systemd-socket`), else systemd's own when orch talks to the system
/// bus as root (only root may connect to it).
pub fn local_private_socket(given: Option<&Path>, bus: &Bus) -> Option<PathBuf> {
    match (given, bus) {
        (Some(p), _) => Some(p.to_path_buf()),
        (None, Bus::System) if nix::unistd::geteuid().is_root() => Some(PRIVATE_SOCKET.into()),
        _ => None,
    }
}

impl Systemd {
    /// A connection for reads (`status`): over `private` when systemd
    /// answers there within `timeout`, else over `bus`. The fallback is
    /// silent: the bus gives the same answers, only slower.
    pub async fn connect_reads(
        host: &str,
        bus: &Bus,
        private: Option<&Path>,
        timeout: Duration,
    ) -> Result<Systemd, SystemdError> {
        if let Some(path) = private {
            match Self::connect_private(host, bus, path, timeout).await {
                Ok(sd) => {
                    tracing::debug!("reading systemd's state over {}", path.display());
                    return Ok(sd);
                }
                Err(e) => tracing::debug!("{}: {e}; reading over {bus}", path.display()),
            }
        }
        Self::connect_host(host, bus, timeout).await
    }

    /// Connects to systemd's private socket at `path`, and checks that it
    /// is systemd that answers (its version), all within `timeout`.
    async fn connect_private(
        host: &str,
        bus: &Bus,
        path: &Path,
        timeout: Duration,
    ) -> Result<Systemd, String> {
        let attempt = async {
            let stream = tokio::net::UnixStream::connect(path)
                .await
                .map_err(|e| e.to_string())?;
            let stream = relay(stream).map_err(|e| e.to_string())?;
            let conn = zbus::conn::Builder::unix_stream(stream)
                .p2p()
                .method_timeout(timeout)
                .build()
                .await
                .map_err(|e| e.to_string())?;
            let sd = Self::over(host, bus, conn, timeout, MAX_DIRECT_CALLS)
                .await
                .map_err(|e| e.to_string())?;
            let version = sd.manager.version().await.map_err(|e| e.to_string())?;
            tracing::trace!("systemd {version} at {}", path.display());
            Ok(sd)
        };
        tokio::time::timeout(timeout, attempt)
            .await
            .map_err(|_| format!("no answer within {timeout:?}"))?
    }
}

/// systemd stamps every message on its private socket with the sender
/// `org.freedesktop.systemd1` (`sd_bus_set_sender`), a well-known name,
/// where zbus 6 accepts only a unique name and drops the connection
/// ("Invalid unique name"). orch's end of the connection is a socket pair
/// relayed to systemd's, with that sender renamed on the way in.
fn relay(systemd: tokio::net::UnixStream) -> std::io::Result<std::os::unix::net::UnixStream> {
    let (ours, theirs) = tokio::net::UnixStream::pair()?;
    let (mut from_systemd, mut to_systemd) = systemd.into_split();
    let (mut from_orch, mut to_orch) = theirs.into_split();
    tokio::spawn(async move { tokio::io::copy(&mut from_orch, &mut to_systemd).await });
    tokio::spawn(async move {
        let mut from = tokio::io::BufReader::new(&mut from_systemd);
        if let Err(e) = rename_senders(&mut from, &mut to_orch).await {
            tracing::debug!("systemd's private socket: {e}");
        }
    });
    ours.into_std()
}

/// The sender systemd writes, and the unique name (as long) orch reads.
const SENDER: &[u8; 24] = b"org.freedesktop.systemd1";
const RENAMED: &[u8; 24] = b":org.freedesktop.systemd";
/// The D-Bus limit on one message.
const MAX_MESSAGE: usize = 128 << 20;

/// Copies systemd's side: the authentication lines as they are, then each
/// message with [`SENDER`] in its header fields renamed.
async fn rename_senders(
    from: &mut (impl tokio::io::AsyncBufRead + Unpin),
    to: &mut (impl AsyncWrite + Unpin),
) -> std::io::Result<()> {
    // "OK <guid>", then the answer to NEGOTIATE_UNIX_FD; then messages.
    loop {
        let mut line = Vec::new();
        if from.read_until(b'\n', &mut line).await? == 0 {
            return Ok(());
        }
        to.write_all(&line).await?;
        if line.starts_with(b"AGREE_UNIX_FD") || line.starts_with(b"ERROR") {
            break;
        }
    }
    loop {
        let mut msg = vec![0u8; 16];
        if let Err(e) = from.read_exact(&mut msg).await {
            return if e.kind() == std::io::ErrorKind::UnexpectedEof {
                Ok(())
            } else {
                Err(e)
            };
        }
        let at = |i: usize| {
            let b = [msg[i], msg[i + 1], msg[i + 2], msg[i + 3]];
            let n = match msg[0] {
                b'l' => u32::from_le_bytes(b),
                _ => u32::from_be_bytes(b),
            };
            n as usize
        };
        let (body, fields) = (at(4), at(12));
        let len = (16 + fields).next_multiple_of(8) + body;
        if len > MAX_MESSAGE {
            return Err(std::io::Error::other(format!("a message of {len} bytes")));
        }
        msg.resize(len, 0);
        from.read_exact(&mut msg[16..]).await?;
        rename_sender(&mut msg[16..16 + fields]);
        to.write_all(&msg).await?;
    }
}

/// Renames [`SENDER`] where it is the sender field (code 7, signature `s`).
fn rename_sender(fields: &mut [u8]) {
    let Some(i) = fields
        .windows(32)
        .position(|w| w[..4] == [7, 1, b's', 0] && w[8..] == SENDER[..])
    else {
        return;
    };
    fields[i + 8..i + 32].copy_from_slice(RENAMED);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Header fields of a reply systemd sent on its private socket (reply
    /// serial 1, sender, signature `v`), then the same name as a
    /// destination (code 6), which stays.
    #[test]
    fn only_the_sender_field_is_renamed() {
        let mut fields = vec![5, 1, b'u', 0, 1, 0, 0, 0, 7, 1, b's', 0, 24, 0, 0, 0];
        fields.extend_from_slice(SENDER);
        fields.extend_from_slice(&[0; 8]);
        fields.extend_from_slice(&[6, 1, b's', 0, 24, 0, 0, 0]);
        fields.extend_from_slice(SENDER);
        let mut renamed = fields.clone();
        rename_sender(&mut renamed);
        assert_eq!(&renamed[16..40], RENAMED);
        assert_eq!(renamed[..16], fields[..16]);
        assert_eq!(renamed[40..], fields[40..]);
        assert!(zbus::names::UniqueName::try_from(std::str::from_utf8(RENAMED).unwrap()).is_ok());
    }
}
