//! Telling a service manager how the server is doing (`sd_notify(3)`): one
//! datagram of `KEY=VALUE` lines to the socket named by `$NOTIFY_SOCKET`,
//! which systemd sets for `Type=notify` services. Without that variable,
//! nothing is sent.

use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr, UnixDatagram};

use log::warn;

/// Sends `state` (e.g. `READY=1\nSTATUS=...`) to `$NOTIFY_SOCKET`, if set.
pub fn notify(state: &str) {
    let Some(path) = std::env::var_os("NOTIFY_SOCKET") else {
        return;
    };
    let sent = (|| -> std::io::Result<()> {
        let bytes = path.as_encoded_bytes();
        let addr = match bytes.strip_prefix(b"@") {
            Some(name) => SocketAddr::from_abstract_name(name)?,
            None => SocketAddr::from_pathname(&path)?,
        };
        let sock = UnixDatagram::unbound()?;
        sock.send_to_addr(state.as_bytes(), &addr)?;
        Ok(())
    })();
    if let Err(e) = sent {
        warn!("cannot notify the service manager at {path:?}: {e}");
    }
}
