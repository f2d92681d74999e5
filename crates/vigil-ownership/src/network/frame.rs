//! The wire format between ownership nodes: a 4-byte big-endian length,
//! then that many bytes of postcard.
//!
//! Postcard rather than bincode: postcard is maintained (bincode's
//! development has stopped and RustSec lists it as unmaintained), it writes integers
//! as varints, so the small numbers Raft sends (terms, indexes, node ids)
//! take a byte or two, and it needs no schema beyond serde, which openraft's
//! `serde` feature already derives. Like bincode it is not self-describing;
//! both ends run the same vigil version, and a frame that does not decode
//! closes the connection.

use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;

/// The largest frame accepted: a snapshot chunk or a run of log entries is
/// cut well below it (see `node::raft_config`), so anything larger is a
/// peer speaking something else.
pub(crate) const MAX_FRAME: usize = 16 << 20;

/// Why a frame could not be read.
#[derive(Debug, thiserror::Error)]
pub(crate) enum FrameError {
    /// The connection failed or closed mid-frame.
    #[error("connection: {0}")]
    Io(#[from] std::io::Error),
    /// The length prefix is zero or over [`MAX_FRAME`].
    #[error("frame length {0} outside 1..={MAX_FRAME}")]
    BadLength(usize),
    /// The payload is not a message of the expected type.
    #[error("undecodable frame of {len} bytes: {source}")]
    Undecodable {
        /// The payload's length.
        len: usize,
        /// What postcard found.
        source: postcard::Error,
    },
    /// The message to send encodes to more than [`MAX_FRAME`].
    #[error("message of {0} bytes exceeds the frame limit")]
    TooLarge(usize),
    /// The message to send could not be encoded.
    #[error("unencodable message: {0}")]
    Unencodable(postcard::Error),
}

/// Encodes `message` as one frame: length prefix and payload.
pub(crate) fn encode<T: Serialize>(message: &T) -> Result<Vec<u8>, FrameError> {
    let mut frame = postcard::to_extend(message, vec![0u8; 4]).map_err(FrameError::Unencodable)?;
    let len = frame.len() - 4;
    if len > MAX_FRAME {
        return Err(FrameError::TooLarge(len));
    }
    frame[..4].copy_from_slice(&(len as u32).to_be_bytes());
    Ok(frame)
}

/// The payload length a frame header announces, if it is acceptable.
pub(crate) fn payload_len(header: [u8; 4]) -> Result<usize, FrameError> {
    let len = u32::from_be_bytes(header) as usize;
    if len == 0 || len > MAX_FRAME {
        return Err(FrameError::BadLength(len));
    }
    Ok(len)
}

/// Decodes one payload.
pub(crate) fn decode<T: DeserializeOwned>(payload: &[u8]) -> Result<T, FrameError> {
    postcard::from_bytes(payload).map_err(|source| FrameError::Undecodable {
        len: payload.len(),
        source,
    })
}

/// Reads one frame's payload; `Ok(None)` is a clean close between frames.
pub(crate) async fn read_payload<R: AsyncRead + Unpin>(
    reader: &mut R,
) -> Result<Option<Vec<u8>>, FrameError> {
    let mut header = [0u8; 4];
    match reader.read_exact(&mut header).await {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e.into()),
    }
    let len = payload_len(header)?;
    let mut payload = vec![0u8; len];
    reader.read_exact(&mut payload).await?;
    Ok(Some(payload))
}

/// How much a writer gathers from its queue into one `write` call.
const WRITE_BATCH_BYTES: usize = 256 << 10;

/// Writes queued frames until the queue closes or a write fails, as many
/// frames per `write` call as are waiting (one syscall for a burst).
pub(crate) async fn write_frames<W: AsyncWrite + Unpin>(
    writer: &mut W,
    queue: &mut mpsc::Receiver<Vec<u8>>,
) -> std::io::Result<()> {
    let mut buf = Vec::new();
    while let Some(first) = queue.recv().await {
        buf.clear();
        buf.extend_from_slice(&first);
        while buf.len() < WRITE_BATCH_BYTES {
            match queue.try_recv() {
                Ok(more) => buf.extend_from_slice(&more),
                Err(_) => break,
            }
        }
        writer.write_all(&buf).await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct Probe {
        id: u64,
        name: String,
    }

    #[test]
    fn a_frame_is_a_big_endian_length_then_postcard() {
        let frame = encode(&Probe {
            id: 300,
            name: "ab".into(),
        })
        .unwrap();
        // 300 as a varint is ac 02; the string is its length then its bytes.
        assert_eq!(frame, [0, 0, 0, 5, 0xac, 0x02, 2, b'a', b'b']);
        let len = payload_len(frame[..4].try_into().unwrap()).unwrap();
        assert_eq!(
            decode::<Probe>(&frame[4..4 + len]).unwrap(),
            Probe {
                id: 300,
                name: "ab".into()
            }
        );
    }

    #[test]
    fn lengths_outside_the_limit_are_refused() {
        assert!(matches!(
            payload_len([0, 0, 0, 0]),
            Err(FrameError::BadLength(0))
        ));
        assert!(matches!(
            payload_len([0xff, 0xff, 0xff, 0xff]),
            Err(FrameError::BadLength(_))
        ));
        assert_eq!(payload_len([0, 0x01, 0, 0]).unwrap(), 65536);
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        assert!(matches!(
            decode::<Probe>(&[0xff]),
            Err(FrameError::Undecodable { len: 1, .. })
        ));
        // A string length far past the payload's end.
        assert!(matches!(
            decode::<Probe>(&[1, 0xff, 0xff, 0x03, b'x']),
            Err(FrameError::Undecodable { .. })
        ));
    }

    #[tokio::test]
    async fn reading_stops_cleanly_between_frames_and_fails_mid_frame() {
        let frame = encode(&Probe {
            id: 1,
            name: String::new(),
        })
        .unwrap();
        let mut whole: &[u8] = &frame;
        assert_eq!(
            read_payload(&mut whole).await.unwrap(),
            Some(frame[4..].to_vec())
        );
        assert_eq!(read_payload(&mut whole).await.unwrap(), None);
        let mut cut: &[u8] = &frame[..frame.len() - 1];
        assert!(matches!(
            read_payload(&mut cut).await,
            Err(FrameError::Io(_))
        ));
    }
}
