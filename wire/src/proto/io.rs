//! Async framing over any tokio `AsyncRead`/`AsyncWrite` (quinn streams, TLS streams, duplex
//! pipes in tests).

use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::frame::{check_prefix, decode_body, encode, FrameConfig, PREFIX_LEN};
use super::FrameError;

/// Initial buffer for a frame body. The buffer then grows only with bytes actually received, so a
/// peer that announces a 4 MiB frame and sends nothing costs us 64 KiB, not 4 MiB.
const INITIAL_BODY_CAPACITY: usize = 64 * 1024;

/// Reads one frame and decodes it as a `T`.
///
/// Returns [`FrameError::Closed`] if the stream ends cleanly before the first prefix byte (the
/// normal end of a watch stream), [`FrameError::Truncated`] if it ends inside a frame, and
/// [`FrameError::TooLarge`] from the prefix alone for an oversized frame. Cancel-safety: none
/// (a frame may be half read); use it on a stream that is dropped when the future is.
pub async fn read_frame<T, R>(r: &mut R, cfg: &FrameConfig) -> Result<T, FrameError>
where
    T: DeserializeOwned,
    R: AsyncRead + Unpin + ?Sized,
{
    let mut prefix = [0u8; PREFIX_LEN];
    let mut filled = 0;
    while filled < PREFIX_LEN {
        let n = r.read(&mut prefix[filled..]).await?;
        if n == 0 {
            return Err(if filled == 0 { FrameError::Closed } else { FrameError::Truncated });
        }
        filled += n;
    }
    let len = check_prefix(prefix, cfg)?;
    // Grow by doubling, never past `len` (<= max_frame, checked above), and only as bytes arrive.
    let mut body: Vec<u8> = Vec::with_capacity(len.min(INITIAL_BODY_CAPACITY));
    while body.len() < len {
        if body.len() == body.capacity() {
            let grow = body.capacity().max(1).min(len - body.len());
            body.reserve_exact(grow);
        }
        let want = (len - body.len()) as u64;
        // `take` stops the read at the frame boundary; spare capacity exists, so `read_buf`
        // does not reallocate.
        let n = (&mut *r).take(want).read_buf(&mut body).await?;
        if n == 0 {
            return Err(FrameError::Truncated);
        }
    }
    decode_body(&body, cfg)
}

/// [`read_frame`] with a deadline: [`FrameError::Timeout`] if no whole frame arrived within
/// `timeout`. Used for request frames (a daemon that opens a stream and sends nothing must not
/// hold a session task forever) and for responses the daemon is waiting on.
pub async fn read_frame_timeout<T, R>(r: &mut R, cfg: &FrameConfig, timeout: Duration) -> Result<T, FrameError>
where
    T: DeserializeOwned,
    R: AsyncRead + Unpin + ?Sized,
{
    match tokio::time::timeout(timeout, read_frame(r, cfg)).await {
        Ok(res) => res,
        Err(_) => Err(FrameError::Timeout(timeout)),
    }
}

/// Encodes `msg` and writes it as one frame, then flushes (TLS streams buffer otherwise).
pub async fn write_frame<T, W>(w: &mut W, msg: &T, cfg: &FrameConfig) -> Result<(), FrameError>
where
    T: Serialize + DeserializeOwned,
    W: AsyncWrite + Unpin + ?Sized,
{
    let frame = encode(msg, cfg)?;
    w.write_all(&frame).await?;
    w.flush().await?;
    Ok(())
}

/// The read half of a framed stream: an `AsyncRead` plus the limits to apply.
#[derive(Debug)]
pub struct FrameReader<R> {
    inner: R,
    cfg: FrameConfig,
}

impl<R: AsyncRead + Unpin> FrameReader<R> {
    pub fn new(inner: R, cfg: FrameConfig) -> Self {
        FrameReader { inner, cfg }
    }

    /// Reads the next frame as a `T`; see [`read_frame`].
    pub async fn read<T: DeserializeOwned>(&mut self) -> Result<T, FrameError> {
        read_frame(&mut self.inner, &self.cfg).await
    }

    /// Reads the next frame with a deadline; see [`read_frame_timeout`].
    pub async fn read_timeout<T: DeserializeOwned>(&mut self, timeout: Duration) -> Result<T, FrameError> {
        read_frame_timeout(&mut self.inner, &self.cfg, timeout).await
    }

    pub fn config(&self) -> &FrameConfig {
        &self.cfg
    }

    pub fn get_mut(&mut self) -> &mut R {
        &mut self.inner
    }

    pub fn into_inner(self) -> R {
        self.inner
    }
}

/// The write half of a framed stream.
#[derive(Debug)]
pub struct FrameWriter<W> {
    inner: W,
    cfg: FrameConfig,
}

impl<W: AsyncWrite + Unpin> FrameWriter<W> {
    pub fn new(inner: W, cfg: FrameConfig) -> Self {
        FrameWriter { inner, cfg }
    }

    /// Writes one frame and flushes; see [`write_frame`].
    pub async fn write<T: Serialize + DeserializeOwned>(&mut self, msg: &T) -> Result<(), FrameError> {
        write_frame(&mut self.inner, msg, &self.cfg).await
    }

    /// Ends the sending side (for quinn, finishes the stream): the peer's next read returns
    /// [`FrameError::Closed`].
    pub async fn shutdown(&mut self) -> Result<(), FrameError> {
        self.inner.shutdown().await?;
        Ok(())
    }

    pub fn config(&self) -> &FrameConfig {
        &self.cfg
    }

    pub fn get_mut(&mut self) -> &mut W {
        &mut self.inner
    }

    pub fn into_inner(self) -> W {
        self.inner
    }
}
