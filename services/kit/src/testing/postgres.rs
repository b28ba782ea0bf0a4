//! A PostgreSQL cluster of a test's own (`initdb` + `pg_ctl` of the installed server, on a port
//! of its own, trust auth on loopback), so a fault test can stop and restart it without
//! disturbing the shared server every other test uses. As root it runs as the `postgres` user.

use std::path::PathBuf;
use std::process::{Command, Stdio};

/// The installed server's binaries (Debian's layout), newest first.
pub fn postgres_bin_dir() -> Option<PathBuf> {
    let mut dirs: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql").ok()?.filter_map(|e| e.ok().map(|e| e.path().join("bin"))).collect();
    dirs.sort();
    dirs.into_iter().rev().find(|d| d.join("initdb").exists() && d.join("pg_ctl").exists())
}

fn is_root() -> bool {
    Command::new("id").arg("-u").output().map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0").unwrap_or(false)
}

/// A running private cluster; stopped (immediately) and removed on drop.
pub struct OwnPostgres {
    bin: PathBuf,
    dir: tempfile::TempDir,
    /// Its port on 127.0.0.1.
    pub port: u16,
}

impl OwnPostgres {
    fn run(&self, tool: &str, args: &[&str]) -> bool {
        let program = self.bin.join(tool);
        let mut cmd = if is_root() {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(&program);
            c
        } else {
            Command::new(&program)
        };
        cmd.args(args).stdout(Stdio::null()).stderr(Stdio::null()).status().is_ok_and(|s| s.success())
    }

    /// Makes and starts a cluster; `None` when no PostgreSQL server is installed here.
    pub fn start() -> Option<OwnPostgres> {
        let bin = postgres_bin_dir()?;
        let dir = tempfile::Builder::new().prefix("wt-pg-").tempdir_in("/tmp").ok()?;
        if is_root() {
            let _ = Command::new("chown").args(["-R", "postgres:postgres"]).arg(dir.path()).status();
        }
        let port = std::net::TcpListener::bind("127.0.0.1:0").ok()?.local_addr().ok()?.port();
        let pg = OwnPostgres { bin, dir, port };
        let data = pg.data().display().to_string();
        assert!(pg.run("initdb", &["-D", &data, "-U", "postgres", "--auth=trust", "-E", "UTF8"]), "initdb");
        assert!(pg.start_again(), "pg_ctl start");
        Some(pg)
    }

    fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// Starts the (stopped) cluster and waits until it accepts connections.
    pub fn start_again(&self) -> bool {
        let data = self.data().display().to_string();
        let opts = format!("-p {} -c listen_addresses=127.0.0.1 -k {}", self.port, self.dir.path().display());
        self.run("pg_ctl", &["-D", &data, "-o", &opts, "-w", "-t", "60", "-l", &format!("{data}.log"), "start"])
    }

    /// Stops the cluster at once (`-m immediate`: like a crash, recovery at the next start).
    pub fn stop(&self) -> bool {
        let data = self.data().display().to_string();
        self.run("pg_ctl", &["-D", &data, "-m", "immediate", "-w", "stop"])
    }

    /// The admin URL (database `postgres`).
    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }
}

impl Drop for OwnPostgres {
    fn drop(&mut self) {
        let _ = self.stop();
    }
}
