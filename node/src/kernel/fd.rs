//! The handshake's byte stream over the socket fd the module hands over.
//!
//! The fd shares its open file with the application (same `struct file`, same `O_NONBLOCK`),
//! so nothing here ever changes file flags: every `recv`/`send` passes `MSG_DONTWAIT` (and
//! `send` `MSG_NOSIGNAL`), and readiness comes from tokio's `AsyncFd` (epoll registration
//! does not touch the file's flags).
//!
//! Reads are **record-exact**: a read never returns a byte beyond the end of the current TLS
//! record (the 5-byte header is parsed as it passes), so when rustls reports the handshake
//! complete, not one byte the peer sent after its last handshake record has been taken off
//! the socket: it is still queued for kTLS to decrypt.
//!
//! Record-exact reads alone are not enough: tokio-rustls keeps reading while rustls "wants
//! read", also right after the record that completed the handshake. So after every complete
//! record the stream yields once (`Pending` with an immediate wake-up) before reading on: a
//! handshake that is complete returns at that point, one that is not polls again and reads
//! the next record.

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use tokio::io::unix::AsyncFd;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// TLS record header length.
pub const RECORD_HEADER: usize = 5;
/// Largest record body TLS allows on the wire (2^14 + 2048 for TLS 1.2 ciphertext; 1.3 is
/// smaller). A header announcing more is a protocol error.
pub const MAX_RECORD_BODY: usize = (1 << 14) + 2048;

/// Where the reader is inside the TLS record stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordCursor {
    header: [u8; RECORD_HEADER],
    header_have: usize,
    body_left: usize,
}

impl Default for RecordCursor {
    fn default() -> Self {
        RecordCursor::new()
    }
}

impl RecordCursor {
    pub fn new() -> RecordCursor {
        RecordCursor { header: [0; RECORD_HEADER], header_have: 0, body_left: 0 }
    }

    /// How many bytes may be read next without crossing a record boundary.
    pub fn limit(&self) -> usize {
        if self.header_have < RECORD_HEADER {
            RECORD_HEADER - self.header_have
        } else {
            self.body_left
        }
    }

    /// Accounts for `bytes` just read (at most [`RecordCursor::limit`] of them).
    pub fn advance(&mut self, bytes: &[u8]) -> io::Result<()> {
        debug_assert!(bytes.len() <= self.limit());
        if self.header_have < RECORD_HEADER {
            self.header[self.header_have..self.header_have + bytes.len()].copy_from_slice(bytes);
            self.header_have += bytes.len();
            if self.header_have == RECORD_HEADER {
                let len = u16::from_be_bytes([self.header[3], self.header[4]]) as usize;
                if len > MAX_RECORD_BODY {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        format!("TLS record of {len} bytes exceeds the protocol limit"),
                    ));
                }
                self.body_left = len;
                if len == 0 {
                    self.header_have = 0;
                }
            }
        } else {
            self.body_left -= bytes.len();
            if self.body_left == 0 {
                self.header_have = 0;
            }
        }
        Ok(())
    }

    /// True between records (nothing of a record has been read, or a record just ended).
    pub fn at_boundary(&self) -> bool {
        self.header_have == 0
    }
}

/// The handed-over socket as an async byte stream for the handshake.
#[derive(Debug)]
pub struct HandoverStream {
    fd: AsyncFd<OwnedFd>,
    cursor: RecordCursor,
    /// A record just ended: the next read yields once first (see the module docs).
    yield_at_boundary: bool,
}

impl HandoverStream {
    /// Wraps the fd. Its file flags are left exactly as they are.
    pub fn new(fd: OwnedFd) -> io::Result<HandoverStream> {
        // SAFETY: the OwnedFd is open and owned by the AsyncFd until `into_inner`/drop; its
        // raw fd never changes.
        let fd = unsafe { AsyncFd::register(fd) }?;
        Ok(HandoverStream { fd, cursor: RecordCursor::new(), yield_at_boundary: false })
    }

    /// Whether the last read ended exactly at a record boundary (always true after a
    /// completed handshake; checked before kTLS is installed).
    pub fn at_record_boundary(&self) -> bool {
        self.cursor.at_boundary()
    }

    /// Takes the fd back (deregistered from the reactor).
    pub fn into_fd(self) -> OwnedFd {
        self.fd.into_inner()
    }

    pub fn fd(&self) -> BorrowedFd<'_> {
        self.fd.get_ref().as_fd()
    }

    /// Peeks at up to `buf.len()` bytes without consuming them (waits until something is
    /// readable or the peer closed).
    pub async fn peek(&self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            let mut guard = self.fd.readable().await?;
            match guard.try_io(|fd| recv(fd.get_ref().as_raw_fd(), buf, libc::MSG_PEEK)) {
                Ok(r) => return r,
                Err(_would_block) => continue,
            }
        }
    }
}

fn recv(fd: i32, buf: &mut [u8], flags: libc::c_int) -> io::Result<usize> {
    // SAFETY: `buf` is a valid writable buffer of `buf.len()` bytes.
    let n = unsafe { libc::recv(fd, buf.as_mut_ptr().cast(), buf.len(), flags | libc::MSG_DONTWAIT) };
    if n < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(n as usize)
    }
}

fn send(fd: i32, buf: &[u8]) -> io::Result<usize> {
    // SAFETY: `buf` is a valid readable buffer of `buf.len()` bytes.
    let n = unsafe { libc::send(fd, buf.as_ptr().cast(), buf.len(), libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL) };
    if n < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(n as usize)
    }
}

impl AsyncRead for HandoverStream {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let me = self.get_mut();
        let want = buf.remaining().min(me.cursor.limit());
        if want == 0 {
            return Poll::Ready(Ok(()));
        }
        if me.yield_at_boundary {
            me.yield_at_boundary = false;
            cx.waker().wake_by_ref();
            return Poll::Pending;
        }
        loop {
            let mut guard = ready!(me.fd.poll_read_ready(cx))?;
            let dst = buf.initialize_unfilled_to(want);
            match guard.try_io(|fd| recv(fd.get_ref().as_raw_fd(), dst, 0)) {
                Ok(Ok(n)) => {
                    me.cursor.advance(&dst[..n])?;
                    me.yield_at_boundary = n > 0 && me.cursor.at_boundary();
                    buf.advance(n);
                    return Poll::Ready(Ok(()));
                }
                Ok(Err(e)) if e.kind() == io::ErrorKind::Interrupted => continue,
                Ok(Err(e)) => return Poll::Ready(Err(e)),
                Err(_would_block) => continue,
            }
        }
    }
}

impl AsyncWrite for HandoverStream {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, data: &[u8]) -> Poll<io::Result<usize>> {
        let me = self.get_mut();
        loop {
            let mut guard = ready!(me.fd.poll_write_ready(cx))?;
            match guard.try_io(|fd| send(fd.get_ref().as_raw_fd(), data)) {
                Ok(Err(e)) if e.kind() == io::ErrorKind::Interrupted => continue,
                Ok(r) => return Poll::Ready(r),
                Err(_would_block) => continue,
            }
        }
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    /// Never shuts the socket down: it belongs to the application.
    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursor_stops_at_every_boundary() {
        let mut c = RecordCursor::new();
        assert_eq!(c.limit(), 5);
        c.advance(&[22, 3]).unwrap();
        assert_eq!(c.limit(), 3);
        c.advance(&[3, 0, 4]).unwrap();
        assert_eq!(c.limit(), 4);
        assert!(!c.at_boundary());
        c.advance(&[1, 2, 3]).unwrap();
        c.advance(&[4]).unwrap();
        assert!(c.at_boundary());
        assert_eq!(c.limit(), 5);
        // An empty record ends at its header.
        c.advance(&[23, 3, 3, 0, 0]).unwrap();
        assert!(c.at_boundary());
        // An oversized record is refused.
        assert!(c.advance(&[23, 3, 3, 0xff, 0xff]).is_err());
    }
}
