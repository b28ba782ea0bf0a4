//! A NATS server of a test's own: the real `nats-server` with JetStream and its own store, on a
//! port of its own, so a test can stop, restart or wipe it without disturbing anyone else.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// Whether a `nats-server` binary is installed here (the Debian package `nats-server`).
pub fn nats_server_binary() -> Option<&'static str> {
    ["/usr/sbin/nats-server", "/usr/bin/nats-server", "/usr/local/bin/nats-server"]
        .into_iter()
        .find(|p| Path::new(p).exists())
}

/// A running private `nats-server`, killed on drop.
pub struct OwnNats {
    child: Option<Child>,
    /// Its port on 127.0.0.1.
    pub port: u16,
    /// Its JetStream store.
    pub dir: PathBuf,
}

impl OwnNats {
    /// Starts a server on a free port with its store in `dir`, and waits until it accepts
    /// connections.
    pub async fn start(dir: &Path) -> OwnNats {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        Self::start_on(port, dir).await
    }

    /// Starts a server on `port` with its store in `dir` (e.g. to restart one that was
    /// stopped), and waits until it accepts connections.
    pub async fn start_on(port: u16, dir: &Path) -> OwnNats {
        Self::spawn(port, dir, true).await
    }

    async fn spawn(port: u16, dir: &Path, jetstream: bool) -> OwnNats {
        let bin = nats_server_binary().expect("nats-server binary (Debian package nats-server) is needed");
        let mut cmd = Command::new(bin);
        cmd.args(["-a", "127.0.0.1", "-p", &port.to_string()]);
        if jetstream {
            cmd.arg("-js").arg("-sd").arg(dir);
        }
        let child = cmd
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start nats-server");
        let nats = OwnNats { child: Some(child), port, dir: dir.to_path_buf() };
        for _ in 0..100 {
            if tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_ok() {
                return nats;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("nats-server did not come up on {port}");
    }

    /// Its URL.
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// Kills the server (its store stays).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts it again on the same port and store.
    pub async fn restart(&mut self) {
        self.stop();
        let again = Self::start_on(self.port, &self.dir.clone()).await;
        self.child = again.into_child();
    }

    /// Starts it again on the same port with its store in `dir` (a fresh folder: NATS back
    /// without its storage, every stream gone), or without JetStream at all.
    pub async fn restart_with(&mut self, dir: &Path, jetstream: bool) {
        self.stop();
        let again = Self::spawn(self.port, dir, jetstream).await;
        self.dir = dir.to_path_buf();
        self.child = again.into_child();
    }

    fn into_child(mut self) -> Option<Child> {
        self.child.take()
    }
}

impl Drop for OwnNats {
    fn drop(&mut self) {
        self.stop();
    }
}
