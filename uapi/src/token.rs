//! msharefs' extension: the one-time token that the server's broker socket
//! trades for a region's backing file descriptor.

use std::mem::{offset_of, size_of};

use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

/// 128 random bits that the broker exchanges, once, for a descriptor.
#[repr(transparent)]
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, Hash, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
pub struct Token(pub [u64; 2]);

impl Token {
    /// Size on the wire.
    pub const SIZE: usize = size_of::<Token>();

    /// The token in the bytes a client sends the broker (`token[0]` then
    /// `token[1]`, native endian).
    pub fn from_bytes(bytes: [u8; Self::SIZE]) -> Token {
        zerocopy::transmute!(bytes)
    }

    /// The bytes a client sends the broker.
    pub fn to_bytes(self) -> [u8; Self::SIZE] {
        zerocopy::transmute!(self)
    }
}

/// `struct mshare_token`: what `MSHAREFS_GET_TOKEN` returns.
#[repr(C)]
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
pub struct MshareToken {
    /// The token.
    pub token: Token,
    /// Pid of the server; its broker listens on [`broker_socket_path`].
    pub server_pid: u32,
    /// [`TOKEN_WRITABLE`], [`TOKEN_HUGETLB`].
    pub flags: u32,
    /// The region's start, as `MSHAREFS_GET_SIZE` says (so that mapping
    /// needs no second ioctl).
    pub start: u64,
    /// The region's size, as `MSHAREFS_GET_SIZE` says.
    pub size: u64,
}

const _: () = {
    assert!(size_of::<MshareToken>() == 40);
    assert!(offset_of!(MshareToken, server_pid) == 16);
    assert!(offset_of!(MshareToken, flags) == 20);
    assert!(offset_of!(MshareToken, start) == 24);
    assert!(offset_of!(MshareToken, size) == 32);
};

/// Token flag (`MSHARE_TOKEN_WRITABLE`): the descriptor it buys is writable
/// (the open was).
pub const TOKEN_WRITABLE: u32 = 1;
/// Token flag (`MSHARE_TOKEN_HUGETLB`): the region is hugetlb-backed.
pub const TOKEN_HUGETLB: u32 = 2;
/// Seconds a token stays valid.
pub const TOKEN_TTL_SECS: u64 = 10;

/// The directory of the brokers' sockets. The server makes it, owned by
/// root and writable by root only, so that no other user can create (squat)
/// a socket there.
pub const BROKER_DIR: &str = "/run/msharefs";

/// The Unix socket of the broker of the server with pid `server_pid`.
///
/// Protocol: the client connects, checks that the peer (`SO_PEERCRED`) is
/// `server_pid`, sends the token's 16 bytes ([`Token::to_bytes`]) and reads
/// a native-endian `i32`: 0 with the descriptor attached (`SCM_RIGHTS`), or
/// an errno without one.
pub fn broker_socket_path(server_pid: u32) -> std::path::PathBuf {
    std::path::Path::new(BROKER_DIR).join(format!("broker.{server_pid}.sock"))
}

/// The socket of the server's broker thread for callers running on CPU
/// `cpu`: that thread is pinned to the CPU, so an exchange wakes no other
/// CPU. Same protocol as [`broker_socket_path`], which a client uses where
/// this one does not exist.
pub fn broker_cpu_socket_path(server_pid: u32, cpu: u32) -> std::path::PathBuf {
    std::path::Path::new(BROKER_DIR).join(format!("broker.{server_pid}.cpu{cpu}.sock"))
}

/// The server pid in a broker socket's file name (`broker.PID.sock` or
/// `broker.PID.cpuN.sock`).
pub fn broker_socket_pid(file_name: &str) -> Option<u32> {
    let rest = file_name.strip_prefix("broker.")?.strip_suffix(".sock")?;
    let pid = match rest.split_once('.') {
        Some((pid, cpu)) => cpu.strip_prefix("cpu")?.parse::<u32>().ok().map(|_| pid)?,
        None => rest,
    };
    pid.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn broker_socket_names_carry_the_server_pid() {
        let name = |p: std::path::PathBuf| p.file_name().unwrap().to_str().unwrap().to_string();
        assert_eq!(broker_socket_pid(&name(broker_socket_path(42))), Some(42));
        assert_eq!(
            broker_socket_pid(&name(broker_cpu_socket_path(42, 3))),
            Some(42)
        );
        assert_eq!(broker_socket_pid("broker.42.cpu.sock"), None);
        assert_eq!(broker_socket_pid("broker.x.sock"), None);
        assert_eq!(broker_socket_pid("other.42.sock"), None);
    }

    #[test]
    fn token_bytes_are_the_two_words_in_order() {
        let t = Token([0x0102_0304_0506_0708, 9]);
        let b = t.to_bytes();
        assert_eq!(&b[..8], &0x0102_0304_0506_0708u64.to_ne_bytes());
        assert_eq!(&b[8..], &9u64.to_ne_bytes());
        assert_eq!(Token::from_bytes(b), t);
        let m = MshareToken {
            token: t,
            server_pid: 3,
            flags: TOKEN_WRITABLE,
            start: 1 << 30,
            size: 2 << 30,
        };
        assert_eq!(MshareToken::read_from_bytes(m.as_bytes()), Ok(m));
    }
}
