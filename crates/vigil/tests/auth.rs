//! Authentication as an operator meets it: `vigil passwd` files, Mosquitto's
//! files and Mosquitto itself, the safe-default refusal, and SIGHUP reload.

use std::path::Path;
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

/// A child process killed (and reaped) when dropped.
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

fn ok(out: &Output) {
    assert!(
        out.status.success(),
        "failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn on_path(program: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {program}")])
        .output()
        .is_ok_and(|o| o.status.success())
}

/// `vigil pub` with credentials, MQTT `version`: did the broker let it in?
fn publish_as(port: u16, version: &str, user: &str, password: &str) -> Output {
    vigil(&[
        "pub",
        "-h",
        "127.0.0.1",
        "-p",
        &port.to_string(),
        "-V",
        version,
        "-u",
        user,
        "-P",
        password,
        "-t",
        "auth/t",
        "-m",
        "x",
    ])
}

fn serve(port: u16, extra: &[&str], log: &Path) -> Killed {
    let child = Command::new(BIN)
        .args([
            "serve",
            "--bind",
            "127.0.0.1",
            "-p",
            &port.to_string(),
            "--store",
            "memory",
        ])
        .args(extra)
        .env("NO_COLOR", "1")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(log).unwrap())
        .spawn()
        .unwrap();
    wait_listening(port);
    Killed(child)
}

/// `vigil passwd -H scram-sha-256|scram-sha-512` entries log in with
/// `vigil pub --auth-method` (MQTT 5 SCRAM) and with a plain password.
#[test]
fn scram_entries_from_vigil_passwd_log_in_with_auth_method_and_plain_passwords() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("passwd");
    let f = file.to_str().unwrap();
    ok(&vigil(&[
        "passwd",
        "-c",
        "-H",
        "scram-sha-256",
        "-b",
        f,
        "dave",
        "dave pw",
    ]));
    ok(&vigil(&[
        "passwd",
        "-H",
        "scram-sha-512",
        "-I",
        "5000",
        "-b",
        f,
        "erin",
        "erin pw",
    ]));
    let text = std::fs::read_to_string(&file).unwrap();
    assert!(text.contains("dave:$scram-sha-256$i=4096$"), "{text}");
    assert!(text.contains("erin:$scram-sha-512$i=5000$"), "{text}");
    let port = free_port();
    let log = dir.path().join("log");
    let _broker = serve(port, &["--password-file", f], &log);
    let scram = |method: &str, user: &str, pw: &str| {
        vigil(&[
            "pub",
            "-h",
            "127.0.0.1",
            "-p",
            &port.to_string(),
            "-V",
            "5",
            "--auth-method",
            method,
            "-u",
            user,
            "-P",
            pw,
            "-t",
            "auth/t",
            "-m",
            "x",
        ])
    };
    ok(&scram("SCRAM-SHA-256", "dave", "dave pw"));
    ok(&scram("SCRAM-SHA-512", "erin", "erin pw"));
    let bad = scram("SCRAM-SHA-256", "dave", "erin pw");
    assert!(!bad.status.success());
    let err = String::from_utf8_lossy(&bad.stderr);
    assert!(
        err.contains("0x86") || err.contains("bad user name or password"),
        "{err}"
    );
    // The same entries take a plain password (MQTT 3.1.1 has no AUTH).
    ok(&publish_as(port, "311", "dave", "dave pw"));
    ok(&publish_as(port, "5", "erin", "erin pw"));
}

#[test]
fn a_public_bind_without_authentication_refuses_to_start() {
    // Refused before anything is bound, so no port is opened to the network.
    let out = vigil(&["serve", "--bind", "0.0.0.0", "-p", "0", "--store", "memory"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("0.0.0.0:0"), "{err}");
    assert!(err.contains("--password-file"), "{err}");
    assert!(err.contains("--allow-anonymous"), "{err}");
}

#[test]
fn vigil_passwd_files_let_the_right_users_in_and_sighup_reloads_them() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("passwd");
    let f = file.to_str().unwrap();
    ok(&vigil(&["passwd", "-c", "-b", f, "alice", "alice pw"]));
    ok(&vigil(&[
        "passwd",
        "-H",
        "sha512-pbkdf2",
        "-b",
        f,
        "bob",
        "bob pw",
    ]));
    ok(&vigil(&[
        "passwd", "-H", "sha512", "-b", f, "carol", "carol pw",
    ]));
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&file).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "the password file is private");
    }
    let port = free_port();
    let log = dir.path().join("log");
    let broker = serve(port, &["--password-file", f], &log);
    for version in ["5", "311"] {
        ok(&publish_as(port, version, "alice", "alice pw"));
        ok(&publish_as(port, version, "bob", "bob pw"));
        ok(&publish_as(port, version, "carol", "carol pw"));
        let bad = publish_as(port, version, "alice", "bob pw");
        assert!(!bad.status.success());
        let err = String::from_utf8_lossy(&bad.stderr);
        assert!(
            err.contains("0x86") || err.contains("bad user name or password"),
            "{err}"
        );
    }
    // Delete bob and reload: bob is refused, alice still in.
    ok(&vigil(&["passwd", "-D", f, "bob"]));
    // A broken line first: the reload keeps the old file and says where.
    std::fs::write(dir.path().join("broken"), "x:$7$1\n").unwrap();
    let pid = broker.0.id().to_string();
    let sighup = || {
        ok(&Command::new("kill").args(["-HUP", &pid]).output().unwrap());
    };
    sighup();
    let start = Instant::now();
    while !std::fs::read_to_string(&log).unwrap().contains("reloaded") {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "no reload logged"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(!publish_as(port, "5", "bob", "bob pw").status.success());
    ok(&publish_as(port, "5", "alice", "alice pw"));
    std::fs::copy(dir.path().join("broken"), &file).unwrap();
    sighup();
    let start = Instant::now();
    while !std::fs::read_to_string(&log)
        .unwrap()
        .contains("reload failed")
    {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "no reload failure logged"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(text.contains(&format!("{f}:1: ")), "{text}");
    ok(&publish_as(port, "5", "alice", "alice pw"));
    assert!(
        !text.contains("alice pw"),
        "a password reached the log: {text}"
    );
    drop(broker);
}

#[test]
fn a_mosquitto_passwd_file_is_accepted_by_vigil() {
    if !on_path("mosquitto_passwd") {
        eprintln!("SKIPPED: mosquitto_passwd is not installed (apt-get install mosquitto)");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("passwd");
    let f = file.to_str().unwrap();
    let run = |args: &[&str]| {
        ok(&Command::new("mosquitto_passwd")
            .args(args)
            .output()
            .unwrap())
    };
    run(&["-c", "-b", f, "alice", "alice pw"]);
    run(&["-H", "sha512", "-b", f, "carol", "carol pw"]);
    let port = free_port();
    let _broker = serve(port, &["--password-file", f], &dir.path().join("log"));
    ok(&publish_as(port, "311", "alice", "alice pw"));
    ok(&publish_as(port, "5", "carol", "carol pw"));
    assert!(!publish_as(port, "5", "alice", "carol pw").status.success());
}

#[test]
fn a_vigil_passwd_sha512_pbkdf2_file_is_accepted_by_mosquitto() {
    if !on_path("mosquitto") {
        eprintln!("SKIPPED: mosquitto is not installed (apt-get install mosquitto)");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("passwd");
    let f = file.to_str().unwrap();
    ok(&vigil(&[
        "passwd",
        "-H",
        "sha512-pbkdf2",
        "-c",
        "-b",
        f,
        "alice",
        "alice pw",
    ]));
    ok(&vigil(&[
        "passwd", "-H", "sha512", "-b", f, "carol", "carol pw",
    ]));
    let port = free_port();
    let conf = dir.path().join("mosquitto.conf");
    // `user root`: Mosquitto started as root would otherwise switch to the
    // `mosquitto` user, which may not read the test's private file.
    std::fs::write(
        &conf,
        format!("listener {port} 127.0.0.1\npassword_file {f}\nallow_anonymous false\nuser root\n"),
    )
    .unwrap();
    let _mosquitto = Killed(
        Command::new("mosquitto")
            .arg("-c")
            .arg(&conf)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    wait_listening(port);
    ok(&publish_as(port, "311", "alice", "alice pw"));
    ok(&publish_as(port, "5", "carol", "carol pw"));
    assert!(!publish_as(port, "311", "alice", "wrong").status.success());
}

#[test]
fn a_public_listener_that_logs_clients_in_by_certificate_needs_no_password_file() {
    let dir = tempfile::tempdir().unwrap();
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let params = rcgen::CertificateParams::new(vec!["localhost".into()]).unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = params.signed_by(&key, &ca, &ca_key).unwrap();
    std::fs::write(dir.path().join("ca.pem"), ca.pem()).unwrap();
    std::fs::write(dir.path().join("server.crt"), cert.pem()).unwrap();
    std::fs::write(dir.path().join("server.key"), key.serialize_pem()).unwrap();
    let port = free_port();
    let config = |identity: bool| {
        let path = dir.path().join(format!("vigil-{identity}.toml"));
        std::fs::write(
            &path,
            format!(
                "[store]\nbackend = \"memory\"\n\n[[listeners]]\nbind = \"0.0.0.0\"\nport = {port}\n\
                 [listeners.tls]\ncert = \"{d}/server.crt\"\nkey = \"{d}/server.key\"\n\
                 ca = \"{d}/ca.pem\"\nrequire_client_cert = true\nuse_identity_as_username = {identity}\n",
                d = dir.path().display()
            ),
        )
        .unwrap();
        path
    };
    // Mutual TLS alone does not name the client (it may claim any user
    // name): without a password file the safe default still refuses.
    let out = vigil(&["serve", "--config", config(false).to_str().unwrap()]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--password-file"), "{err}");
    // With the certificate as the login, every client is authenticated.
    let child = Command::new(BIN)
        .args(["serve", "--config", config(true).to_str().unwrap()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let _broker = Killed(child);
    wait_listening(port);
}
