//! One session with the `riptides` family: a single netlink socket (the module registers the
//! socket that sent `SET_CONFIG` as the namespace's handshake agent, and only that agent may
//! accept handshakes, so commands and the "events" subscription share it), a reader task that
//! routes replies to their requests by sequence number and multicast messages to the event
//! channel, and typed request helpers.

use std::collections::HashMap;
use std::io;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use netlink_sys::Socket;
use riptides_kmod::uapi::{RIPTIDES_GENL_MCGRP_EVENTS, RIPTIDES_GENL_NAME};
use tokio::io::unix::AsyncFd;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use super::genl::{self, Family, MsgBuilder, NLMSG_DONE, NLMSG_ERROR};
use super::msg::{self, Event};

/// `nlctrl` notification: a family went away.
const CTRL_CMD_DELFAMILY: u8 = 2;

/// Something the reader saw that is not a reply.
#[derive(Debug)]
pub enum Incoming {
    Event(Event),
    /// The family was unregistered (module unloaded) or the socket failed: reconnect.
    Lost(String),
}

type Reply = Result<Vec<Vec<u8>>, io::Error>;
/// A request waiting for its answer: the data messages so far, and where the result goes.
type Pending = (Vec<Vec<u8>>, oneshot::Sender<Reply>);

struct Shared {
    sock: AsyncFd<Socket>,
    seq: AtomicU32,
    pending: Mutex<HashMap<u32, Pending>>,
}

/// A connected session. Dropping it (or cancelling) stops the reader and closes the socket,
/// which ends the daemon's registration in the module.
pub struct Session {
    pub family: Family,
    shared: Arc<Shared>,
    timeout: Duration,
    cancel: CancellationToken,
}

impl Drop for Session {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

fn data_err(e: impl std::fmt::Display) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, e.to_string())
}

impl Session {
    /// Resolves the family, opens the socket, subscribes to "events" (and to `nlctrl`'s
    /// notifications, to see the module go away), and starts the reader.
    pub async fn connect(timeout: Duration, events: mpsc::Sender<Incoming>) -> io::Result<Session> {
        let (family, ctrl) = tokio::task::spawn_blocking(move || {
            let f = genl::resolve_family(RIPTIDES_GENL_NAME, timeout)?;
            let c = genl::resolve_family("nlctrl", timeout).ok().flatten();
            Ok::<_, io::Error>((f, c))
        })
        .await
        .map_err(io::Error::other)??;
        let family = family.ok_or_else(|| {
            io::Error::new(io::ErrorKind::NotFound, "the riptides generic netlink family is not registered")
        })?;
        let group = family.group(RIPTIDES_GENL_MCGRP_EVENTS).ok_or_else(|| {
            io::Error::new(io::ErrorKind::InvalidData, "the riptides family has no \"events\" multicast group")
        })?;
        let sock = genl::open_socket()?;
        sock.add_membership(group)?;
        if let Some(notify) = ctrl.as_ref().and_then(|c| c.group("notify")) {
            let _ = sock.add_membership(notify);
        }
        // Events can come in bursts (up to the module's 4096 held connections).
        let _ = socket2::SockRef::from(&sock).set_recv_buffer_size(4 << 20);
        sock.set_non_blocking(true)?;
        // SAFETY: the socket owns its fd, open until the AsyncFd (and with it the socket) drops.
        let sock = unsafe { AsyncFd::register(sock) }?;
        let shared = Arc::new(Shared { sock, seq: AtomicU32::new(1), pending: Mutex::new(HashMap::new()) });
        let cancel = CancellationToken::new();
        tokio::spawn(reader(shared.clone(), family.id, events, cancel.clone()));
        Ok(Session { family, shared, timeout, cancel })
    }

    /// Sends a request (always with `NLM_F_ACK`) and waits for its data messages and ACK.
    /// Returns the generic netlink payloads (genl header included) of the data messages.
    pub async fn request(&self, m: &MsgBuilder) -> io::Result<Vec<Vec<u8>>> {
        let seq = loop {
            let s = self.shared.seq.fetch_add(1, Ordering::Relaxed);
            if s != 0 {
                break s;
            }
        };
        let (tx, rx) = oneshot::channel();
        self.shared.pending.lock().unwrap_or_else(|p| p.into_inner()).insert(seq, (Vec::new(), tx));
        let wire = m.finish(seq);
        let sent = async {
            loop {
                let mut g = self.shared.sock.writable().await?;
                match g.try_io(|s| s.get_ref().send(&wire, 0)) {
                    Ok(r) => return r,
                    Err(_would_block) => continue,
                }
            }
        };
        let r = match tokio::time::timeout(self.timeout, async {
            sent.await?;
            rx.await.map_err(|_| io::Error::new(io::ErrorKind::BrokenPipe, "netlink session closed"))?
        })
        .await
        {
            Ok(r) => r,
            Err(_) => Err(io::Error::new(io::ErrorKind::TimedOut, "the module did not answer in time")),
        };
        self.shared.pending.lock().unwrap_or_else(|p| p.into_inner()).remove(&seq);
        r
    }

    pub async fn set_config(&self, s: &msg::KernelSettings) -> io::Result<()> {
        self.request(&msg::set_config(self.family.id, s).map_err(data_err)?).await.map(drop)
    }
    pub async fn load_bundle(&self, generation: u64, roots: &[Vec<u8>]) -> io::Result<()> {
        self.request(&msg::load_bundle(self.family.id, generation, roots).map_err(data_err)?).await.map(drop)
    }
    pub async fn load_policy(&self, generation: u64, entries: &[msg::PolicyEntry]) -> io::Result<()> {
        self.request(&msg::load_policy(self.family.id, generation, entries).map_err(data_err)?).await.map(drop)
    }
    pub async fn set_verdict(&self, conn_id: u64, v: msg::Verdict) -> io::Result<()> {
        self.request(&msg::set_verdict(self.family.id, conn_id, v).map_err(data_err)?).await.map(drop)
    }
    /// Takes the pending handshake: the new fd (in this process's table) for the socket.
    pub async fn handshake_accept(&self, conn_id: u64) -> io::Result<std::os::fd::OwnedFd> {
        use std::os::fd::FromRawFd;
        let replies = self.request(&msg::handshake_accept(self.family.id, conn_id).map_err(data_err)?).await?;
        for r in &replies {
            let attrs = genl::parse_attrs(r.get(genl::GENL_HDRLEN..).unwrap_or_default()).map_err(data_err)?;
            if let Ok(fd) = msg::accept_reply_fd(&attrs) {
                if fd < 0 {
                    return Err(data_err("negative fd in the accept reply"));
                }
                // SAFETY: the module installed this fd in our table for us; nothing else owns it.
                return Ok(unsafe { std::os::fd::OwnedFd::from_raw_fd(fd) });
            }
        }
        Err(data_err("HANDSHAKE_ACCEPT reply carries no SOCKFD"))
    }
    pub async fn handshake_done(
        &self,
        conn_id: u64,
        status: u32,
        peer: Option<&str>,
        v: msg::Verdict,
    ) -> io::Result<()> {
        self.request(&msg::handshake_done(self.family.id, conn_id, status, peer, v).map_err(data_err)?).await.map(drop)
    }
    pub async fn stats(&self) -> io::Result<msg::Stats> {
        let replies = self.request(&msg::get_stats(self.family.id)).await?;
        let r = replies.first().ok_or_else(|| data_err("GET_STATS: no reply"))?;
        let attrs = genl::parse_attrs(r.get(genl::GENL_HDRLEN..).unwrap_or_default()).map_err(data_err)?;
        msg::Stats::from_attrs(&attrs).map_err(data_err)
    }
}

async fn reader(shared: Arc<Shared>, family_id: u16, events: mpsc::Sender<Incoming>, cancel: CancellationToken) {
    let mut buf = vec![0u8; 256 * 1024];
    let lost = loop {
        let n = tokio::select! {
            _ = cancel.cancelled() => break None,
            r = async {
                loop {
                    let mut g = shared.sock.readable().await?;
                    match g.try_io(|s| s.get_ref().recv(&mut &mut buf[..], 0)) {
                        Ok(r) => return r,
                        Err(_would_block) => continue,
                    }
                }
            } => r,
        };
        let n = match n {
            Ok(n) => n,
            // Multicast overflow: some events were lost. Held connections we never heard of
            // time out in the module (refused), never pass in plaintext.
            Err(e) if e.raw_os_error() == Some(libc::ENOBUFS) => {
                tracing::warn!("netlink receive buffer overflowed: some kernel events were lost");
                continue;
            }
            Err(e) => break Some(format!("netlink receive failed: {e}")),
        };
        let msgs = match genl::parse_messages(&buf[..n]) {
            Ok(m) => m,
            Err(e) => {
                tracing::warn!(error = %e, "malformed netlink datagram from the kernel; ignored");
                continue;
            }
        };
        let mut stop = None;
        for m in msgs {
            if m.seq != 0 {
                let mut pending = shared.pending.lock().unwrap_or_else(|p| p.into_inner());
                let Some((acc, _)) = pending.get_mut(&m.seq) else { continue };
                let done = match m.ty {
                    NLMSG_ERROR => Some(match m.error_code() {
                        Ok(0) => Ok(std::mem::take(acc)),
                        Ok(c) => Err(io::Error::from_raw_os_error(-c)),
                        Err(e) => Err(data_err(e)),
                    }),
                    NLMSG_DONE => Some(Ok(std::mem::take(acc))),
                    t if t == family_id => {
                        if acc.len() < 1024 {
                            acc.push(m.payload.to_vec());
                        }
                        None
                    }
                    _ => None,
                };
                if let Some(result) = done {
                    if let Some((_, tx)) = pending.remove(&m.seq) {
                        let _ = tx.send(result);
                    }
                }
                continue;
            }
            if m.ty == genl::GENL_ID_CTRL {
                if let Ok((cmd, _, attrs)) = m.genl() {
                    if cmd == CTRL_CMD_DELFAMILY {
                        let name =
                            genl::AttrsExt::attr(&attrs[..], genl::CTRL_ATTR_FAMILY_NAME).and_then(|a| a.str(64).ok());
                        if name == Some(RIPTIDES_GENL_NAME) {
                            stop = Some("the riptides family was unregistered (module unloaded)".to_owned());
                        }
                    }
                }
                continue;
            }
            if m.ty != family_id {
                continue;
            }
            match m.genl().and_then(|(cmd, _, attrs)| Event::decode(cmd, &attrs)) {
                Ok(Some(ev)) => {
                    if events.try_send(Incoming::Event(ev)).is_err() {
                        tracing::warn!("kernel event queue full: event dropped (the module times the connection out)");
                    }
                }
                Ok(None) => {}
                Err(e) => tracing::warn!(error = %e, "malformed event from the kernel; ignored"),
            }
        }
        if stop.is_some() {
            break stop;
        }
    };
    // Fail every waiting request.
    for (_, (_, tx)) in shared.pending.lock().unwrap_or_else(|p| p.into_inner()).drain() {
        let _ = tx.send(Err(io::Error::new(io::ErrorKind::BrokenPipe, "netlink session ended")));
    }
    if let Some(reason) = lost {
        let _ = events.send(Incoming::Lost(reason)).await;
    }
}
