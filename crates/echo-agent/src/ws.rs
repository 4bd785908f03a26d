//! The server side of a WebSocket echo session (RFC 6455), written by hand.
//!
//! Hand-written rather than tungstenite so the agent adds no crate, and no feature
//! of a shared crate, to sluicegate's dependency graph: the images build both
//! packages in one `cargo build` and must not recompile the product for the agent.
//! SHA-1 (for the accept key) comes from `ring` and base64 from `base64`, both
//! already in sluicegate's graph.
//!
//! The session echoes every data frame as it came (opcode and FIN kept, so
//! fragmented messages come back fragmented), answers a ping with a pong, answers
//! a close with a close and then ends. Client frames must be masked; a protocol
//! error or a frame over [`MAX_PAYLOAD`] ends the session with a close (1002/1009).

use base64::Engine as _;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// The largest frame payload accepted; larger ones end the session.
pub const MAX_PAYLOAD: u64 = 16 * 1024 * 1024;

/// RFC 6455's GUID appended to the client's key.
const GUID: &[u8] = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

const CONTINUATION: u8 = 0x0;
const TEXT: u8 = 0x1;
const BINARY: u8 = 0x2;
const CLOSE: u8 = 0x8;
const PING: u8 = 0x9;
const PONG: u8 = 0xA;

/// Close codes this side sends.
const PROTOCOL_ERROR: u16 = 1002;
const TOO_BIG: u16 = 1009;

/// `Sec-WebSocket-Accept` for the client's `Sec-WebSocket-Key`.
pub fn accept_key(key: &[u8]) -> String {
    let mut input = Vec::with_capacity(key.len() + GUID.len());
    input.extend_from_slice(key);
    input.extend_from_slice(GUID);
    let digest = ring::digest::digest(&ring::digest::SHA1_FOR_LEGACY_USE_ONLY, &input);
    base64::engine::general_purpose::STANDARD.encode(digest.as_ref())
}

/// Why a session ended other than by a close handshake.
#[derive(Debug)]
pub enum SessionError {
    Io(std::io::Error),
    /// The client broke the protocol; we sent a close with this code.
    Protocol(&'static str),
}

impl std::fmt::Display for SessionError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SessionError::Io(err) => write!(f, "{err}"),
            SessionError::Protocol(why) => write!(f, "protocol error: {why}"),
        }
    }
}

impl From<std::io::Error> for SessionError {
    fn from(err: std::io::Error) -> Self {
        SessionError::Io(err)
    }
}

/// Echoes frames on `io` until the close handshake (Ok) or an error.
pub async fn echo<S: AsyncRead + AsyncWrite + Unpin>(mut io: S) -> Result<(), SessionError> {
    loop {
        let mut head = [0u8; 2];
        io.read_exact(&mut head).await?;
        let fin = head[0] & 0x80 != 0;
        let opcode = head[0] & 0x0F;
        if head[0] & 0x70 != 0 {
            return refuse(&mut io, PROTOCOL_ERROR, "reserved bits set").await;
        }
        if head[1] & 0x80 == 0 {
            return refuse(&mut io, PROTOCOL_ERROR, "client frame not masked").await;
        }
        let len = match head[1] & 0x7F {
            126 => u64::from(io.read_u16().await?),
            127 => io.read_u64().await?,
            n => u64::from(n),
        };
        if len > MAX_PAYLOAD {
            return refuse(&mut io, TOO_BIG, "frame too large").await;
        }
        let mut mask = [0u8; 4];
        io.read_exact(&mut mask).await?;
        // Bounded by MAX_PAYLOAD above, so this fits in usize.
        let mut payload = vec![0u8; usize::try_from(len).unwrap_or(0)];
        io.read_exact(&mut payload).await?;
        for (i, byte) in payload.iter_mut().enumerate() {
            *byte ^= mask[i % 4];
        }
        match opcode {
            CONTINUATION | TEXT | BINARY => write_frame(&mut io, fin, opcode, &payload).await?,
            PING => write_frame(&mut io, true, PONG, &payload).await?,
            PONG => {}
            CLOSE => {
                // Echo the status code (not the reason) back, as the handshake asks.
                let code = payload.get(..2).unwrap_or(&[]);
                write_frame(&mut io, true, CLOSE, code).await?;
                io.shutdown().await?;
                return Ok(());
            }
            _ => return refuse(&mut io, PROTOCOL_ERROR, "unknown opcode").await,
        }
    }
}

async fn refuse<S: AsyncWrite + Unpin>(
    io: &mut S,
    code: u16,
    why: &'static str,
) -> Result<(), SessionError> {
    write_frame(io, true, CLOSE, &code.to_be_bytes()).await?;
    Err(SessionError::Protocol(why))
}

/// One unmasked (server) frame.
async fn write_frame<S: AsyncWrite + Unpin>(
    io: &mut S,
    fin: bool,
    opcode: u8,
    payload: &[u8],
) -> std::io::Result<()> {
    let mut frame = Vec::with_capacity(payload.len() + 10);
    frame.push(if fin { 0x80 } else { 0 } | opcode);
    match payload.len() {
        n @ 0..=125 => frame.push(n as u8),
        n @ 126..=0xFFFF => {
            frame.push(126);
            frame.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            frame.push(127);
            frame.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    frame.extend_from_slice(payload);
    io.write_all(&frame).await?;
    io.flush().await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accept_key_matches_the_rfc_example() {
        // RFC 6455 section 1.3.
        assert_eq!(
            accept_key(b"dGhlIHNhbXBsZSBub25jZQ=="),
            "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        );
    }

    #[tokio::test]
    async fn unmasked_client_frames_are_refused() {
        let (mut client, server) = tokio::io::duplex(64);
        let session = tokio::spawn(echo(server));
        client.write_all(&[0x81, 0x01, b'x']).await.expect("write");
        let mut close = [0u8; 4];
        client.read_exact(&mut close).await.expect("close frame");
        assert_eq!(close, [0x88, 0x02, 0x03, 0xEA]);
        assert!(matches!(
            session.await.expect("join"),
            Err(SessionError::Protocol(_))
        ));
    }
}
