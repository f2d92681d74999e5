//! The built `vigil` binary: `serve`, and `pub`/`sub` against vigil and against Mosquitto.

use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_vigil");

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn wait_listening(port: u16) {
    let start = Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "nothing listening on {port}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn vigil(args: &[&str]) -> Output {
    Command::new(BIN).args(args).output().unwrap()
}

/// Reads a child's stderr on a thread until it ends, returning all of it;
/// returns once a line starting with `ready` has been printed (or panics
/// after 10 s).
fn wait_for_stderr_line(child: &mut Child, ready: &str) -> std::thread::JoinHandle<String> {
    use std::io::BufRead;
    let stderr = child.stderr.take().expect("stderr piped");
    let (seen, saw) = std::sync::mpsc::channel();
    let wanted = ready.to_owned();
    let reader = std::thread::spawn(move || {
        let mut all = String::new();
        for line in std::io::BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            if line.starts_with(&wanted) {
                let _ = seen.send(());
            }
            all.push_str(&line);
            all.push('\n');
        }
        all
    });
    if saw.recv_timeout(Duration::from_secs(10)).is_err() {
        let _ = child.kill();
        let printed = reader.join().unwrap_or_default();
        panic!("no line starting {ready:?} on stderr within 10 s; it printed:\n{printed}");
    }
    reader
}

/// `vigil sub -C 2` in the background, two `vigil pub`, and the subscriber's output.
fn pub_sub_round_trip(port: u16, version: &str) {
    let p = port.to_string();
    let mut sub = Command::new(BIN)
        .args([
            "sub",
            "-h",
            "127.0.0.1",
            "-p",
            &p,
            "-V",
            version,
            "-t",
            "cli/#",
            "-q",
            "1",
            "-C",
            "2",
            "-W",
            "10",
            "-F",
            "%t=%p q%q",
            "-d",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // With -d, `vigil sub` says so once the broker's SUBACK granted the filter.
    let stderr = wait_for_stderr_line(&mut sub, "subscribed to cli/# (granted QoS 1 ");
    for (topic, msg) in [("cli/a", "one"), ("cli/b", "two")] {
        let out = vigil(&[
            "pub",
            "-h",
            "127.0.0.1",
            "-p",
            &p,
            "-V",
            version,
            "-t",
            topic,
            "-m",
            msg,
            "-q",
            "1",
        ]);
        assert!(
            out.status.success(),
            "pub failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let out = sub.wait_with_output().unwrap();
    let stderr = stderr.join().unwrap_or_default();
    assert!(out.status.success(), "sub failed: {stderr}");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "cli/a=one q1\ncli/b=two q1\n"
    );
}

#[test]
fn serve_then_pub_and_sub_v5_and_v311() {
    let port = free_port();
    let _broker = Killed(
        Command::new(BIN)
            .args([
                "serve",
                "--bind",
                "127.0.0.1",
                "-p",
                &port.to_string(),
                "--store",
                "memory",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    wait_listening(port);
    pub_sub_round_trip(port, "5");
    pub_sub_round_trip(port, "311");
}

#[test]
fn pub_and_sub_against_mosquitto() {
    if std::env::var("VIGIL_SKIP_MOSQUITTO").is_ok_and(|v| v == "1") {
        eprintln!("VIGIL_SKIP_MOSQUITTO=1: skipped");
        return;
    }
    let port = free_port();
    let _mosquitto = Killed(
        Command::new("mosquitto")
            .args(["-p", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect(
                "mosquitto is needed (apt-get install mosquitto) or set VIGIL_SKIP_MOSQUITTO=1",
            ),
    );
    wait_listening(port);
    pub_sub_round_trip(port, "5");
    pub_sub_round_trip(port, "31");
}

#[test]
fn failures_explain_themselves() {
    // A bound socket that never listens holds the port, so no broker started by a test running
    // beside this one can take it: connecting is refused for as long as `held` lives.
    let held = tokio::net::TcpSocket::new_v4().expect("socket");
    held.bind("127.0.0.1:0".parse().expect("address"))
        .expect("bind");
    let port = held.local_addr().expect("local address").port().to_string();
    let out = vigil(&["pub", "-h", "127.0.0.1", "-p", &port, "-t", "x", "-m", "y"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("cannot connect to 127.0.0.1") && err.contains("refused"),
        "{err}"
    );
    let out = vigil(&["serve", "--config", "/nonexistent/vigil.toml"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent/vigil.toml"));
}
