//! Process identification on real sockets (host network namespace, loopback only).

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command};
use std::sync::Arc;
use std::time::{Duration, Instant};

use riptides_node::dataplane::process::{
    Identifier, IdentifyConfig, IdentifyError, SocketSource, LABEL_BINARY_HASH, LABEL_BINARY_PATH, LABEL_CMDLINE,
    LABEL_GID, LABEL_NAME, LABEL_PID, LABEL_UID,
};

fn sha256_file(path: &std::path::Path) -> String {
    let out = Command::new("sha256sum").arg(path).output().unwrap();
    assert!(out.status.success());
    String::from_utf8_lossy(&out.stdout).split_whitespace().next().unwrap().to_owned()
}

/// Kills the child on drop, so a failed assertion does not leave it running.
struct Kill(Child);
impl Drop for Kill {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn pair(listen: &str) -> (TcpListener, TcpStream, TcpStream) {
    let l = TcpListener::bind(listen).unwrap();
    let c = TcpStream::connect(l.local_addr().unwrap()).unwrap();
    let (s, _) = l.accept().unwrap();
    (l, c, s)
}

#[test]
fn identifies_own_connection_with_all_labels() {
    let id = Identifier::new(IdentifyConfig::default());
    for listen in ["127.0.0.1:0", "[::1]:0"] {
        let (_l, client, _server) = pair(listen);
        let w = id.identify(client.local_addr().unwrap(), client.peer_addr().unwrap()).unwrap();
        let me = std::process::id();
        assert_eq!(w.process.as_ref().map(|p| p.pid), Some(me), "{listen}");
        let exe = std::fs::read_link("/proc/self/exe").unwrap();
        let comm = std::fs::read_to_string("/proc/self/comm").unwrap();
        let l = &w.labels;
        assert_eq!(l[LABEL_PID], me.to_string());
        assert_eq!(l[LABEL_NAME], comm.trim_end());
        assert_eq!(l[LABEL_BINARY_PATH], exe.display().to_string());
        assert_eq!(l[LABEL_UID], "0");
        assert_eq!(l[LABEL_GID], "0");
        assert!(l[LABEL_CMDLINE].starts_with(&std::env::args().next().unwrap()), "{}", l[LABEL_CMDLINE]);
        assert_eq!(w.socket.uid, 0);
        assert_eq!(l[LABEL_BINARY_HASH], sha256_file(&exe));
    }
}

#[test]
fn identifies_a_child_process_running_as_another_user() {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    let script = format!(
        "import socket,time\ns=socket.create_connection(('127.0.0.1',{port}))\ntime.sleep(5)\n# marker-for-cmdline"
    );
    let child = Kill(Command::new("/usr/bin/python3").args(["-c", &script]).uid(65534).gid(65534).spawn().unwrap());
    l.set_nonblocking(true).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    let (_s, peer) = loop {
        match l.accept() {
            Ok(x) => break x,
            Err(_) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(10)),
            Err(e) => panic!("child never connected: {e}"),
        }
    };

    let id = Arc::new(Identifier::new(IdentifyConfig::default()));
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    // The process's socket goes from `peer` to the listener.
    let w = rt.block_on(id.identify_async(peer, l.local_addr().unwrap())).unwrap();
    let p = w.process.as_ref().expect("process found");
    assert_eq!(p.pid, child.0.id());
    let exe: PathBuf = std::fs::canonicalize("/usr/bin/python3").unwrap();
    assert_eq!(w.labels[LABEL_BINARY_PATH], exe.display().to_string());
    assert_eq!(w.labels[LABEL_NAME], "python3");
    assert_eq!(w.labels[LABEL_UID], "65534");
    assert_eq!(w.labels[LABEL_GID], "65534");
    assert_eq!(w.socket.uid, 65534);
    assert!(w.labels[LABEL_CMDLINE].starts_with("/usr/bin/python3 -c import socket"), "{}", w.labels[LABEL_CMDLINE]);
    assert!(w.labels[LABEL_CMDLINE].contains("marker-for-cmdline"));
    assert_eq!(w.labels[LABEL_BINARY_HASH], sha256_file(&exe));

    // Again: served from the pid cache and the hash cache, same answer.
    let again = id.identify(peer, l.local_addr().unwrap()).unwrap();
    assert_eq!(again, w);

    // The /proc/net fallback finds the same socket and process.
    let procnet = Identifier::new(IdentifyConfig { source: SocketSource::ProcNet, ..Default::default() });
    let w2 = procnet.identify(peer, l.local_addr().unwrap()).unwrap();
    assert_eq!(w2.socket, w.socket);
    assert_eq!(w2.process.map(|p| p.pid), Some(child.0.id()));
}

#[test]
fn unknown_tuple_is_not_found() {
    let local: SocketAddr = "127.0.0.1:1".parse().unwrap();
    let remote: SocketAddr = "127.0.0.1:2".parse().unwrap();
    for source in [SocketSource::Auto, SocketSource::SockDiag, SocketSource::ProcNet] {
        let id = Identifier::new(IdentifyConfig { source, ..Default::default() });
        let err = id.identify(local, remote).unwrap_err();
        assert!(matches!(err, IdentifyError::NotFound { .. }), "{source:?}: {err}");
        assert_eq!(err.to_string(), "no TCP socket 127.0.0.1:1 -> 127.0.0.1:2 found");
    }
    let id = Identifier::new(IdentifyConfig::default());
    assert!(matches!(id.identify(local, "[::1]:2".parse().unwrap()), Err(IdentifyError::Lookup(_))));
}

#[test]
fn socket_without_a_visible_process_keeps_only_the_owner_uid() {
    // An empty fake /proc: the socket is found (sock_diag does not need /proc) but no process.
    let fake = tempfile::tempdir().unwrap();
    let id = Identifier::new(IdentifyConfig {
        proc_root: fake.path().to_owned(),
        source: SocketSource::SockDiag,
        ..Default::default()
    });
    let (_l, client, _server) = pair("127.0.0.1:0");
    let w = id.identify(client.local_addr().unwrap(), client.peer_addr().unwrap()).unwrap();
    assert!(w.process.is_none());
    assert_eq!(w.labels.len(), 1);
    assert_eq!(w.labels[LABEL_UID], "0");
}
