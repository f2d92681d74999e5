//! The dashboard in a real browser: headless Chromium (Debian's `chromium`)
//! loads `/` from a running `vigil serve --admin` with live clients, runs
//! its JavaScript, and the page must show the right client count, the client
//! ids, and a keep-alive disconnect with its reason in words. Without
//! Chromium the test says so and passes, except under CI (`CI` set), where
//! `.ci/run` installs it and its absence fails the test.

use std::io::{BufRead, Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_vigil");

struct Serve {
    child: Child,
    lines: Arc<Mutex<Vec<String>>>,
}

impl Serve {
    fn start() -> Serve {
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
                "log line missing"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn port(&self, what: &str) -> u16 {
        let line = self.wait_for(|l| l.contains(what));
        line.split("127.0.0.1:")
            .nth(1)
            .map(|r| {
                r.chars()
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

fn connect(port: u16, client_id: &str, k: u16) -> TcpStream {
    let mut body = Vec::new();
    body.extend_from_slice(&4u16.to_be_bytes());
    body.extend_from_slice(b"MQTT");
    body.extend_from_slice(&[4, 0x02]);
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
    s
}

fn chromium() -> Option<&'static str> {
    ["chromium", "chromium-browser", "google-chrome"]
        .into_iter()
        .find(|b| {
            Command::new(b)
                .arg("--version")
                .output()
                .is_ok_and(|o| o.status.success())
        })
}

/// The page's DOM after its scripts ran (virtual time lets the polls finish).
fn rendered(browser: &str, url: &str, extra: &[&str]) -> String {
    let mut child = Command::new(browser)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--virtual-time-budget=5000",
        ])
        .args(extra)
        .arg(url)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn chromium");
    let start = Instant::now();
    while child.try_wait().expect("wait").is_none() {
        assert!(start.elapsed() < Duration::from_secs(60), "chromium hangs");
        std::thread::sleep(Duration::from_millis(50));
    }
    String::from_utf8_lossy(&child.wait_with_output().expect("output").stdout).into_owned()
}

#[test]
fn the_dashboard_shows_clients_and_why_one_disconnected_in_a_real_browser() {
    let Some(browser) = chromium() else {
        assert!(
            std::env::var_os("CI").is_none(),
            "chromium is missing under CI: .ci/run installs it"
        );
        eprintln!("SKIPPED: no chromium on this machine (apt-get install chromium)");
        return;
    };
    let serve = Serve::start();
    let mqtt = serve.port("vigil listening");
    let admin = serve.port("admin listening");
    let _a = connect(mqtt, "sensor-a", 60);
    let _b = connect(mqtt, "sensor-b", 60);
    let _silent = connect(mqtt, "dev-7", 1);
    serve.wait_for(|l| l.contains("client disconnected") && l.contains("dev-7"));

    let base = format!("http://127.0.0.1:{admin}/");
    let dom = rendered(browser, &format!("{base}#why=dev-7"), &["--dump-dom"]);
    assert!(dom.contains(r#"id="clients-count">2<"#), "{dom}");
    assert!(dom.contains(r#"data-client="sensor-a""#), "{dom}");
    assert!(dom.contains(r#"data-client="sensor-b""#), "{dom}");
    assert!(
        !dom.contains(r#"data-client="dev-7""#),
        "a closed clean session is listed"
    );
    assert!(
        dom.contains(r#"data-reason="keep_alive_timeout"><td>keep alive timeout</td>"#),
        "{dom}"
    );
    assert!(
        dom.contains("s of silence with K = 1 s; no will (reason code 0x8D"),
        "{dom}"
    );

    // A screenshot for people (kept where the test's note can point at it).
    let shot = std::env::temp_dir().join("vigil-dashboard.png");
    let arg = format!("--screenshot={}", shot.display());
    rendered(
        browser,
        &format!("{base}#why=dev-7"),
        &["--window-size=1280,900", &arg],
    );
    assert!(
        std::fs::metadata(&shot).is_ok_and(|m| m.len() > 1000),
        "no screenshot"
    );
}
