//! `vigil ctl` against a running `vigil serve --admin`, as an operator uses
//! it: after a client was closed for keep alive, `vigil ctl why` says so with
//! the numbers; `clients`, `client`, `kick`, `stats` and `--json` work; a
//! wrong token is refused. And `--log-format json` writes JSON lines.

use std::io::{BufRead, Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_vigil");

struct Serve {
    child: Child,
    lines: Arc<Mutex<Vec<String>>>,
}

impl Serve {
    fn start(extra: &[&str]) -> Serve {
        let mut child = Command::new(BIN)
            .args([
                "serve",
                "--bind",
                "127.0.0.1",
                "-p",
                "0",
                "--store",
                "memory",
            ])
            .args(["--admin", "--admin-port", "0", "--sys-interval", "0"])
            .args(extra)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn vigil serve");
        let stderr = child.stderr.take().expect("piped stderr");
        let lines = Arc::new(Mutex::new(Vec::new()));
        let sink = lines.clone();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stderr)
                .lines()
                .map_while(Result::ok)
            {
                sink.lock().expect("log lock").push(line);
            }
        });
        Serve { child, lines }
    }

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

    /// The port in the first log line containing `what` (text or JSON logs).
    fn port(&self, what: &str) -> u16 {
        let line = self.wait_for(|l| l.contains(what));
        line.split("127.0.0.1:")
            .nth(1)
            .map(|rest| {
                rest.chars()
                    .take_while(char::is_ascii_digit)
                    .collect::<String>()
            })
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("no port in {line:?}"))
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn ctl(admin: u16, args: &[&str]) -> Output {
    let mut child = Command::new(BIN)
        .arg("ctl")
        .arg("--url")
        .arg(format!("http://127.0.0.1:{admin}"))
        .args(args)
        .env_remove("VIGIL_ADMIN_TOKEN")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn vigil ctl");
    let start = Instant::now();
    while child.try_wait().expect("wait").is_none() {
        assert!(start.elapsed() < Duration::from_secs(30), "vigil ctl hangs");
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().expect("output")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// An MQTT 3.1.1 CONNECT with clean session and keep alive `k`; returns the
/// socket once the CONNACK accepted it.
fn connect(port: u16, client_id: &str, k: u16) -> TcpStream {
    let mut body = Vec::new();
    body.extend_from_slice(&4u16.to_be_bytes());
    body.extend_from_slice(b"MQTT");
    body.push(4);
    body.push(0x02);
    body.extend_from_slice(&k.to_be_bytes());
    body.extend_from_slice(&(client_id.len() as u16).to_be_bytes());
    body.extend_from_slice(client_id.as_bytes());
    let mut packet = vec![0x10, body.len() as u8];
    packet.extend_from_slice(&body);
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    s.write_all(&packet).expect("CONNECT");
    let mut connack = [0u8; 4];
    s.read_exact(&mut connack).expect("CONNACK");
    assert_eq!(connack, [0x20, 2, 0, 0]);
    s
}

#[test]
fn ctl_why_tells_a_keep_alive_close_with_its_numbers() {
    let serve = Serve::start(&[]);
    let mqtt = serve.port("vigil listening");
    let admin = serve.port("admin listening");

    // Silent after CONNECT with K = 1: closed 1.5 s later.
    let _silent = connect(mqtt, "dev-7", 1);
    serve.wait_for(|l| l.contains("client disconnected") && l.contains("dev-7"));
    let out = ctl(admin, &["why", "dev-7"]);
    assert!(out.status.success(), "{out:?}");
    let text = stdout(&out);
    assert!(text.contains("last 1 disconnect(s) of dev-7"), "{text}");
    assert!(text.contains("keep alive expired after 1."), "{text}");
    assert!(
        text.contains("s of silence with K = 1 s; no will"),
        "{text}"
    );
    assert!(text.contains("reason code 0x8D"), "{text}");

    let out = ctl(admin, &["--json", "why", "dev-7"]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(v["disconnects"][0]["reason"], "keep_alive_timeout");
    assert_eq!(v["disconnects"][0]["keep_alive"], 1);
    let silent = v["disconnects"][0]["silent_secs"].as_f64().unwrap();
    assert!((1.5..5.0).contains(&silent), "{silent}");

    let out = ctl(admin, &["why", "never-seen"]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("404"),
        "{out:?}"
    );
}

#[test]
fn ctl_lists_kicks_and_counts_and_needs_the_token() {
    let dir = tempfile::tempdir().expect("tempdir");
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, "s3cret\n").expect("token file");
    let serve = Serve::start(&["--admin-token-file", token_file.to_str().unwrap()]);
    let mqtt = serve.port("vigil listening");
    let admin = serve.port("admin listening");
    let mut live = connect(mqtt, "sensor-1", 60);

    let out = ctl(admin, &["clients"]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("401"),
        "{out:?}"
    );
    let out = ctl(admin, &["--token", "wrong", "stats"]);
    assert!(!out.status.success());

    let t = ["--token", "s3cret"];
    let out = ctl(admin, &[&t[..], &["clients"]].concat());
    let text = stdout(&out);
    assert!(
        text.contains("sensor-1") && text.contains("connected"),
        "{text}"
    );
    assert!(text.contains("1 client(s)"), "{text}");
    let out = ctl(admin, &[&t[..], &["client", "sensor-1"]].concat());
    assert!(
        stdout(&out).contains("keep alive (s)      60"),
        "{}",
        stdout(&out)
    );
    let out = ctl(admin, &[&t[..], &["stats"]].concat());
    assert!(
        stdout(&out).contains("connections             1"),
        "{}",
        stdout(&out)
    );

    let out = ctl(admin, &[&t[..], &["kick", "sensor-1"]].concat());
    assert!(out.status.success(), "{out:?}");
    assert_eq!(stdout(&out).trim(), "sensor-1: disconnected");
    // MQTT 3.1.1 has no DISCONNECT from the server: the socket just closes.
    let mut rest = Vec::new();
    let _ = live.read_to_end(&mut rest);
    serve.wait_for(|l| l.contains("client disconnected") && l.contains("sensor-1"));
    let out = ctl(admin, &[&t[..], &["why", "sensor-1"]].concat());
    assert!(
        stdout(&out).contains("kicked by an administrator"),
        "{}",
        stdout(&out)
    );
    let out = ctl(admin, &[&t[..], &["retained"]].concat());
    assert!(
        out.status.success() && stdout(&out).starts_with("TOPIC"),
        "{out:?}"
    );
}

#[test]
fn log_format_json_writes_one_object_per_line() {
    let serve = Serve::start(&["--log-format", "json"]);
    let line = serve.wait_for(|l| l.contains("vigil listening"));
    let v: serde_json::Value = serde_json::from_str(&line).expect("a JSON log line");
    assert_eq!(v["fields"]["message"], "vigil listening");
    assert_eq!(v["level"], "INFO");
}

#[test]
fn ctl_reload_rereads_the_acl_and_names_the_bad_line() {
    let dir = tempfile::tempdir().expect("temp dir");
    let acl = dir.path().join("acl");
    std::fs::write(&acl, "topic readwrite a/#\n").expect("write acl");
    let serve = Serve::start(&["--acl-file", acl.to_str().expect("utf-8 path")]);
    let admin = serve.port("admin listening");

    let out = ctl(admin, &["reload"]);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(stdout(&out).trim(), "reloaded auth");

    std::fs::write(&acl, "topic readwrite a/#\nfrobnicate b\n").expect("write acl");
    let out = ctl(admin, &["reload"]);
    assert!(!out.status.success(), "{out:?}");
    let text = stdout(&out);
    assert!(
        text.contains("NOT reloaded auth (the previous one stays in force)")
            && text.contains(&format!("{}:2:", acl.display())),
        "{text}"
    );
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("400"),
        "{out:?}"
    );
    serve.wait_for(|l| l.contains("auth reload failed"));

    let out = ctl(admin, &["--json", "reload"]);
    let v: serde_json::Value = serde_json::from_str(&stdout(&out)).expect("JSON");
    assert_eq!(v["failed"][0]["line"], 2);
}
