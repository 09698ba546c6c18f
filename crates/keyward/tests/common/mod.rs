//! A real `keyward serve` process for tests that need one of their own (durability,
//! cluster): a free port, the `root key:` line read off its stderr, killed when dropped.

#![allow(dead_code)]

use std::ffi::OsStr;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::Receiver;
use std::time::Duration;

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub struct ServeProcess {
    pub child: Child,
    pub base: String,
    root_key: Receiver<String>,
}

impl ServeProcess {
    /// Starts `keyward serve --listen 127.0.0.1:<free port>` with `args` after it.
    pub fn spawn<I, S>(args: I) -> ServeProcess
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let port = free_port();
        let mut child = Command::new(env!("CARGO_BIN_EXE_keyward"))
            .args(["serve", "--listen", &format!("127.0.0.1:{port}")])
            .args(args)
            .env("KEYWARD_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = child.stderr.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some(k) = line.strip_prefix("root key: ") {
                    let _ = tx.send(k.trim().to_owned());
                }
            }
        });
        ServeProcess {
            child,
            base: format!("http://127.0.0.1:{port}"),
            root_key: rx,
        }
    }

    /// The root key, if this process bootstrapped the store (call once it answers).
    pub fn root_key(&self) -> Option<String> {
        self.root_key.recv_timeout(Duration::from_millis(200)).ok()
    }
}

impl Drop for ServeProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
