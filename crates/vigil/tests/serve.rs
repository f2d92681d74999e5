//! `vigil serve` as a person starting it meets it: the messages it prints when
//! the data directory, the config file or the port is wrong, what it logs
//! after a crash, and logs fit for a file (no escape codes when stderr is a
//! pipe; a disconnect line that says what became of the will).

use std::io::{BufRead, Read, Write};
use std::net::TcpStream;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_vigil");

/// `vigil serve` on 127.0.0.1 with a port the broker picks, its stderr
/// collected line by line.
struct Broker {
    child: Child,
    lines: Arc<Mutex<Vec<String>>>,
    /// The thread reading stderr into `lines`.
    reader: Option<std::thread::JoinHandle<()>>,
}

impl Broker {
    fn start(extra: &[&str], data_dir: &Path) -> Broker {
        let mut cmd = Command::new(BIN);
        cmd.args(["serve", "--bind", "127.0.0.1", "-p", "0"])
            .args(extra)
            .arg("--data-dir")
            .arg(data_dir)
            // Colour is decided by the terminal test, not inherited.
            .env_remove("NO_COLOR")
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("spawn vigil serve");
        let stderr = child.stderr.take().expect("piped stderr");
        let lines = Arc::new(Mutex::new(Vec::new()));
        let sink = lines.clone();
        let reader = std::thread::spawn(move || {
            for line in std::io::BufReader::new(stderr)
                .lines()
                .map_while(Result::ok)
            {
                sink.lock().expect("log lock").push(line);
            }
        });
        let broker = Broker {
            child,
            lines,
            reader: Some(reader),
        };
        broker.wait_for(|l| l.contains("vigil listening"));
        broker
    }

    /// The first line matching `pred`, waiting up to 30 s for it.
    fn wait_for(&self, pred: impl Fn(&str) -> bool) -> String {
        let start = Instant::now();
        loop {
            if let Some(l) = self
                .lines
                .lock()
                .expect("log lock")
                .iter()
                .find(|l| pred(l))
            {
                return l.clone();
            }
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "no such log line in {:#?}",
                self.lines.lock().expect("log lock")
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn port(&self) -> u16 {
        let line = self.wait_for(|l| l.contains("vigil listening"));
        line.rsplit(':')
            .next()
            .and_then(|p| p.trim().parse().ok())
            .unwrap_or_else(|| panic!("no port in {line:?}"))
    }

    fn log(&self) -> String {
        self.lines.lock().expect("log lock").join("\n")
    }

    /// SIGKILL, and the log so far once the pipe has drained.
    fn kill(mut self) -> String {
        let _ = self.child.kill();
        let _ = self.child.wait();
        // The reader ends at the pipe's EOF: every line is in.
        if let Some(reader) = self.reader.take() {
            let _ = reader.join();
        }
        self.log()
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs `cmd` to its exit, killing it after 30 s (a broker that wrongly
/// started would otherwise hang the test).
fn run_to_exit(cmd: &mut Command) -> Output {
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn vigil");
    let start = Instant::now();
    while child.try_wait().expect("wait").is_none() {
        if start.elapsed() > Duration::from_secs(30) {
            let _ = child.kill();
            let out = child.wait_with_output().expect("output");
            panic!(
                "still running after 30 s: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().expect("output")
}

fn stderr_of(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// An MQTT 3.1.1 CONNECT (clean session, keep alive 60), with a will if given.
fn connect_packet(client_id: &str, will: Option<(&str, &str)>) -> Vec<u8> {
    fn string(out: &mut Vec<u8>, s: &str) {
        out.extend_from_slice(&(s.len() as u16).to_be_bytes());
        out.extend_from_slice(s.as_bytes());
    }
    let mut body = Vec::new();
    string(&mut body, "MQTT");
    body.push(4);
    body.push(if will.is_some() { 0x06 } else { 0x02 });
    body.extend_from_slice(&60u16.to_be_bytes());
    string(&mut body, client_id);
    if let Some((topic, message)) = will {
        string(&mut body, topic);
        string(&mut body, message);
    }
    assert!(body.len() < 128, "one-byte remaining length");
    let mut packet = vec![0x10, body.len() as u8];
    packet.extend_from_slice(&body);
    packet
}

/// Connects, reads the CONNACK, and drops the socket without DISCONNECT.
fn connect_and_vanish(port: u16, client_id: &str, will: Option<(&str, &str)>) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    s.write_all(&connect_packet(client_id, will))
        .expect("send CONNECT");
    let mut connack = [0u8; 4];
    s.read_exact(&mut connack).expect("CONNACK");
    assert_eq!(connack, [0x20, 2, 0, 0], "accepted");
}

/// Connects, publishes a retained QoS 1 message and waits for its PUBACK.
fn publish_retained_and_vanish(port: u16) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    s.write_all(&connect_packet("x", None))
        .expect("send CONNECT");
    let mut connack = [0u8; 4];
    s.read_exact(&mut connack).expect("CONNACK");
    assert_eq!(connack, [0x20, 2, 0, 0], "accepted");
    // PUBLISH QoS 1, retain: topic "k", packet id 1, payload "v".
    s.write_all(&[0x33, 6, 0, 1, b'k', 0, 1, b'v'])
        .expect("send PUBLISH");
    let mut puback = [0u8; 4];
    s.read_exact(&mut puback).expect("PUBACK");
    assert_eq!(puback, [0x40, 2, 0, 1], "acknowledged");
}

/// A tempdir the unprivileged user can reach (tempfile makes them 0700).
fn open_tempdir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755))
        .expect("chmod tempdir");
    dir
}

/// True when this process runs as root (the owner of a file it creates).
fn running_as_root(dir: &Path) -> bool {
    let probe = dir.join("probe");
    std::fs::write(&probe, b"").expect("probe file");
    let uid = std::fs::metadata(&probe).expect("probe metadata").uid();
    std::fs::remove_file(&probe).expect("remove probe");
    uid == 0
}

#[test]
fn logs_written_to_a_pipe_have_no_escape_codes() {
    let dir = open_tempdir();
    let broker = Broker::start(&["--store", "memory"], &dir.path().join("data"));
    connect_and_vanish(broker.port(), "plain", None);
    broker.wait_for(|l| l.contains("client disconnected"));
    let log = broker.kill();
    assert!(log.contains("vigil listening"), "{log}");
    assert!(
        !log.contains('\u{1b}'),
        "escape codes in a log written to a pipe: {log:?}"
    );
}

#[test]
fn the_disconnect_log_says_what_became_of_the_will() {
    let dir = open_tempdir();
    let broker = Broker::start(&["--store", "memory"], &dir.path().join("data"));
    let port = broker.port();
    connect_and_vanish(port, "no-will", None);
    let line = broker.wait_for(|l| l.contains("client disconnected") && l.contains("no-will"));
    assert!(line.contains("will=none"), "{line}");
    assert!(!line.contains("will=true"), "{line}");
    connect_and_vanish(port, "with-will", Some(("wills/w", "gone")));
    let line = broker.wait_for(|l| l.contains("client disconnected") && l.contains("with-will"));
    assert!(line.contains("will=publish"), "{line}");
    broker.wait_for(|l| l.contains("publishing will") && l.contains("with-will"));
}

#[test]
fn a_data_dir_the_broker_may_not_write_is_a_permission_error_not_damage() {
    let dir = open_tempdir();
    let root = running_as_root(dir.path());
    let empty = dir.path().join("empty");
    let healthy = dir.path().join("healthy");
    std::fs::create_dir(&empty).expect("mkdir");
    // A healthy store, closed uncleanly as a crash would leave it.
    drop(Broker::start(&[], &healthy).kill());
    let store = healthy.join("vigil.redb");
    let before = std::fs::read(&store).expect("store written");
    for d in [&empty, &healthy] {
        std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o555)).expect("chmod");
    }
    std::fs::set_permissions(&store, std::fs::Permissions::from_mode(0o444)).expect("chmod");
    for data_dir in [&empty, &healthy] {
        let mut cmd = Command::new(BIN);
        cmd.args(["serve", "--bind", "127.0.0.1", "-p", "0", "--data-dir"])
            .arg(data_dir)
            .current_dir(dir.path())
            .env("NO_COLOR", "1");
        if root {
            // Root may write anywhere: run as nobody, as a service would.
            cmd.uid(65534).gid(65534);
        }
        let out = run_to_exit(&mut cmd);
        let err = stderr_of(&out);
        assert!(!out.status.success(), "started: {err}");
        assert!(err.contains("Permission denied"), "{err}");
        assert!(err.contains("may not read and write"), "{err}");
        assert!(err.contains(&*data_dir.to_string_lossy()), "{err}");
        assert!(!err.contains("damaged"), "{err}");
        assert!(!err.contains("move it aside"), "{err}");
    }
    assert_eq!(std::fs::read(&store).expect("store"), before, "left alone");
    // Let the tempdir be removed.
    for d in [&empty, &healthy] {
        std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    }
}

#[test]
fn a_data_dir_that_is_a_regular_file_says_so() {
    let dir = open_tempdir();
    let file = dir.path().join("data");
    std::fs::write(&file, b"notes").expect("file");
    let out = run_to_exit(
        Command::new(BIN)
            .args(["serve", "--bind", "127.0.0.1", "-p", "0", "--data-dir"])
            .arg(&file),
    );
    let err = stderr_of(&out);
    assert!(!out.status.success(), "{err}");
    assert!(err.contains("is a file, not a directory"), "{err}");
    assert!(!err.contains("File exists"), "{err}");
}

#[test]
fn a_missing_config_file_prints_its_cause_once() {
    let out = run_to_exit(Command::new(BIN).args(["serve", "--config", "/nonexistent/vigil.toml"]));
    let err = stderr_of(&out);
    assert!(!out.status.success(), "{err}");
    assert!(err.contains("/nonexistent/vigil.toml"), "{err}");
    assert_eq!(err.matches("No such file or directory").count(), 1, "{err}");
}

#[test]
fn after_sigkill_the_repair_is_logged_once() {
    let dir = open_tempdir();
    let data = dir.path().join("data");
    let first = Broker::start(&[], &data);
    // A retained QoS 1 message is acknowledged only once committed; the
    // process then dies with the file open, as in a crash, and redb must
    // repair it. (Without a commit of its own the fresh file sometimes still
    // holds redb's quick-repair state and opens without a repair.)
    publish_retained_and_vanish(first.port());
    drop(first.kill());
    let second = Broker::start(&[], &data);
    second.wait_for(|l| l.contains("store opened"));
    let log = second.kill();
    assert_eq!(
        log.matches("store was not closed cleanly").count(),
        1,
        "{log}"
    );
    assert!(log.contains("store repaired"), "{log}");
}

#[test]
fn a_busy_port_stops_the_start_before_any_store_is_created() {
    let dir = open_tempdir();
    let held = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = held.local_addr().expect("address").port();
    let data = dir.path().join("new-data");
    let out = run_to_exit(
        Command::new(BIN)
            .args(["serve", "--bind", "127.0.0.1", "-p", &port.to_string()])
            .arg("--data-dir")
            .arg(&data),
    );
    let err = stderr_of(&out);
    assert!(!out.status.success(), "{err}");
    assert!(err.contains(&format!("127.0.0.1:{port}")), "{err}");
    assert!(err.contains("-p/--port"), "{err}");
    assert!(!data.exists(), "a store was created before the bind failed");
}
