//! `vigil ctl`: the admin API from the command line. Tables for people,
//! `--json` for scripts. The HTTP it needs (one request per run, plain
//! http:// to the admin listener) is a few lines on a TcpStream rather than
//! an HTTP client crate.

use std::time::Duration;

use anyhow::{bail, Context};
use clap::{Args, Subcommand};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Flags of `vigil ctl`.
#[derive(Debug, Args)]
pub(crate) struct CtlArgs {
    /// The admin listener.
    #[arg(long, default_value = "http://127.0.0.1:18083", global = true)]
    url: String,
    /// Bearer token of the admin API (or the VIGIL_ADMIN_TOKEN variable).
    #[arg(long, global = true)]
    token: Option<String>,
    /// Print the API's JSON instead of a table.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: CtlCommand,
}

#[derive(Debug, Subcommand)]
enum CtlCommand {
    /// List clients (connected and offline sessions).
    Clients {
        /// Only client ids starting with this.
        #[arg(long)]
        prefix: Option<String>,
        /// Only connected clients.
        #[arg(long)]
        connected: bool,
    },
    /// One client.
    Client {
        /// Client id.
        id: String,
    },
    /// Disconnect a client with DISCONNECT 0x98 (Administrative action).
    Kick {
        /// Client id.
        id: String,
        /// Also discard its session (subscriptions, queued messages).
        #[arg(long)]
        session: bool,
    },
    /// Why was this client disconnected? Its last disconnects, in words.
    Why {
        /// Client id.
        id: String,
    },
    /// Retained messages.
    Retained {
        /// Topic filter [default: #].
        #[arg(long)]
        topic: Option<String>,
        /// Messages per page (1 to 1000).
        #[arg(long, default_value_t = 1000)]
        limit: usize,
        /// Start after this topic (the `next` of the previous page).
        #[arg(long)]
        after: Option<String>,
    },
    /// Broker statistics.
    Stats,
    /// Retire a cluster node that died for good from the client-id
    /// ownership group (ask the group's leader; the node must be down).
    Retire {
        /// The node id.
        node: u64,
    },
    /// Re-read the password file, ACL, JWT key and TLS certificates (as
    /// SIGHUP does); a file that fails keeps the old one in force.
    Reload,
}

/// Runs one `vigil ctl` command.
pub(crate) async fn run(args: CtlArgs) -> anyhow::Result<std::process::ExitCode> {
    let enc = vigil_admin::encode_segment;
    let (method, path) = match &args.command {
        CtlCommand::Clients { prefix, connected } => {
            let mut q = vec!["limit=1000".to_owned()];
            if let Some(p) = prefix {
                q.push(format!("prefix={}", enc(p)));
            }
            if *connected {
                q.push("connected=true".into());
            }
            ("GET", format!("/api/v1/clients?{}", q.join("&")))
        }
        CtlCommand::Client { id } => ("GET", format!("/api/v1/clients/{}", enc(id))),
        CtlCommand::Kick { id, session } => (
            "DELETE",
            format!("/api/v1/clients/{}?session={session}", enc(id)),
        ),
        CtlCommand::Why { id } => ("GET", format!("/api/v1/clients/{}/disconnects", enc(id))),
        CtlCommand::Retained {
            topic,
            limit,
            after,
        } => {
            let mut q = format!(
                "/api/v1/retained?topic={}&limit={limit}",
                enc(topic.as_deref().unwrap_or("#"))
            );
            if let Some(a) = after {
                q.push_str(&format!("&after={}", enc(a)));
            }
            ("GET", q)
        }
        CtlCommand::Stats => ("GET", "/api/v1/stats".to_owned()),
        CtlCommand::Retire { node } => ("DELETE", format!("/api/v1/cluster/members/{node}")),
        CtlCommand::Reload => ("POST", "/api/v1/reload".to_owned()),
    };
    let token = args.token.clone().or_else(|| {
        std::env::var("VIGIL_ADMIN_TOKEN")
            .ok()
            .filter(|t| !t.is_empty())
    });
    let (status, body) = request(&args.url, method, &path, token.as_deref()).await?;
    let value: Value = serde_json::from_str(&body)
        .with_context(|| format!("the admin API answered {status} with something not JSON"))?;
    if status != 200 {
        let msg = value["error"].as_str().unwrap_or("error");
        if matches!(args.command, CtlCommand::Reload) && status != 401 {
            if args.json {
                println!("{}", serde_json::to_string_pretty(&value)?);
            } else {
                println!("{}", reload_text(&value).trim_end());
            }
            bail!("{status}: {msg}");
        }
        if status == 401 {
            bail!("{status}: {msg}; pass --token or set VIGIL_ADMIN_TOKEN");
        }
        bail!("{status}: {msg}");
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&value)?);
        return Ok(std::process::ExitCode::SUCCESS);
    }
    let text = match &args.command {
        CtlCommand::Clients { .. } => clients_table(&value),
        CtlCommand::Client { .. } => client_text(&value),
        CtlCommand::Kick { id, .. } => {
            format!("{id}: {}", value["result"].as_str().unwrap_or("done"))
        }
        CtlCommand::Why { id } => why_text(id, &value),
        CtlCommand::Retained { .. } => retained_table(&value),
        CtlCommand::Stats => stats_text(&value),
        CtlCommand::Retire { node } => {
            format!("node {node} retired; voters now {}", value["voters"])
        }
        CtlCommand::Reload => reload_text(&value),
    };
    println!("{}", text.trim_end());
    Ok(std::process::ExitCode::SUCCESS)
}

/// One HTTP/1.1 request to `base` (http:// only); (status, body).
async fn request(
    base: &str,
    method: &str,
    path: &str,
    token: Option<&str>,
) -> anyhow::Result<(u16, String)> {
    let Some(rest) = base.strip_prefix("http://") else {
        bail!("--url must start with http:// (the admin listener speaks plain HTTP; put TLS in front of it with a proxy)");
    };
    let host = rest.trim_end_matches('/');
    if host.contains('/') {
        bail!("--url takes no path: {base}");
    }
    let exchange = async {
        let mut s = tokio::net::TcpStream::connect(host)
            .await
            .with_context(|| format!("cannot reach the admin listener at {base} (is vigil serve running with --admin?)"))?;
        let mut req = format!(
            "{method} {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\nAccept: application/json\r\n"
        );
        if let Some(t) = token {
            req.push_str(&format!("Authorization: Bearer {t}\r\n"));
        }
        req.push_str("Content-Length: 0\r\n\r\n");
        s.write_all(req.as_bytes()).await?;
        let mut raw = Vec::new();
        // Bounded: an answer larger than this is not from vigil.
        (&mut s)
            .take(64 * 1024 * 1024)
            .read_to_end(&mut raw)
            .await?;
        anyhow::Ok(raw)
    };
    let raw = tokio::time::timeout(Duration::from_secs(30), exchange)
        .await
        .context("the admin listener did not answer within 30 s")??;
    parse_response(&raw)
}

/// Status and body of an HTTP/1.1 response read to its end.
fn parse_response(raw: &[u8]) -> anyhow::Result<(u16, String)> {
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .context("not an HTTP response")?;
    let head = std::str::from_utf8(&raw[..split]).context("not an HTTP response")?;
    let body = &raw[split + 4..];
    let status: u16 = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .context("no status in the HTTP response")?;
    let chunked = head.lines().any(|l| {
        let l = l.to_ascii_lowercase();
        l.starts_with("transfer-encoding:") && l.contains("chunked")
    });
    let body = if chunked {
        dechunk(body)?
    } else {
        body.to_vec()
    };
    Ok((status, String::from_utf8_lossy(&body).into_owned()))
}

fn dechunk(mut body: &[u8]) -> anyhow::Result<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let line_end = body
            .windows(2)
            .position(|w| w == b"\r\n")
            .context("bad chunked body")?;
        let size_text = std::str::from_utf8(&body[..line_end])?;
        let size = usize::from_str_radix(size_text.split(';').next().unwrap_or("").trim(), 16)
            .context("bad chunk size")?;
        body = &body[line_end + 2..];
        if size == 0 {
            return Ok(out);
        }
        let chunk = body.get(..size).context("truncated chunk")?;
        out.extend_from_slice(chunk);
        body = body.get(size + 2..).context("truncated chunk")?;
    }
}

fn s(v: &Value) -> String {
    match v {
        Value::Null => "-".into(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<String>| {
        cells
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect::<Vec<_>>()
            .join("  ")
            .trim_end()
            .to_owned()
    };
    let mut out = line(header.iter().map(|h| (*h).to_owned()).collect());
    for row in rows {
        out.push('\n');
        out.push_str(&line(row.clone()));
    }
    out
}

fn clients_table(v: &Value) -> String {
    let rows: Vec<Vec<String>> = v["clients"]
        .as_array()
        .map(|a| a.as_slice())
        .unwrap_or_default()
        .iter()
        .map(|c| {
            vec![
                s(&c["client_id"]),
                if c["connected"] == true {
                    "connected".into()
                } else {
                    "offline".into()
                },
                s(&c["address"]),
                s(&c["protocol"]),
                s(&c["keep_alive"]),
                s(&c["subscriptions"]),
                s(&c["queued"]),
            ]
        })
        .collect();
    let mut out = table(
        &[
            "CLIENT",
            "STATE",
            "ADDRESS",
            "PROTO",
            "KEEPALIVE",
            "SUBS",
            "QUEUED",
        ],
        &rows,
    );
    out.push_str(&format!("\n{} client(s)", s(&v["total"])));
    out
}

fn client_text(c: &Value) -> String {
    [
        ("client", &c["client_id"]),
        ("connected", &c["connected"]),
        ("address", &c["address"]),
        ("username", &c["username"]),
        ("protocol", &c["protocol"]),
        ("keep alive (s)", &c["keep_alive"]),
        ("connected for (s)", &c["connected_for_secs"]),
        ("listener", &c["listener"]),
        ("last packet (s ago)", &c["last_packet_secs_ago"]),
        (
            "packets in / out",
            &json!(format!(
                "{} / {}",
                s(&c["packets_in"]),
                s(&c["packets_out"])
            )),
        ),
        (
            "bytes in / out",
            &json!(format!("{} / {}", s(&c["bytes_in"]), s(&c["bytes_out"]))),
        ),
        ("in flight", &c["inflight"]),
        ("subscriptions", &c["subscriptions"]),
        ("queued", &c["queued"]),
        ("persistent session", &c["persistent"]),
        ("parked (idle)", &c["parked"]),
    ]
    .iter()
    .map(|(k, v)| format!("{k:<20}{}\n", s(v)))
    .collect()
}

/// "2026-12-04 17:58:12 UTC" from Unix milliseconds.
fn utc(ms: u64) -> String {
    let secs = ms / 1000;
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02} UTC",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// One disconnect in words: "keep alive expired after 7.500 s of silence
/// with K = 5 s; will published".
fn why_line(r: &Value) -> String {
    let will = match r["will"].as_str() {
        Some("publish") => "will published",
        Some("discard") => "will discarded",
        _ => "no will",
    };
    let code = r["reason_code"].as_u64().unwrap_or(0);
    // Records from a broker before per-connection figures have none.
    let traffic = match (r["packets_in"].as_u64(), r["packets_out"].as_u64()) {
        (Some(pi), Some(po)) => format!(
            "; in {pi} packets / {} B, out {po} packets / {} B",
            r["bytes_in"].as_u64().unwrap_or(0),
            r["bytes_out"].as_u64().unwrap_or(0),
        ),
        _ => String::new(),
    };
    format!(
        "{}  {}; {will} (reason code 0x{code:02X}, from {}, connected {:.1} s{traffic})",
        utc(r["at_ms"].as_u64().unwrap_or(0)),
        s(&r["detail"]),
        s(&r["address"]),
        r["connected_secs"].as_f64().unwrap_or(0.0),
    )
}

fn why_text(id: &str, v: &Value) -> String {
    let list = v["disconnects"]
        .as_array()
        .map(|a| a.as_slice())
        .unwrap_or_default();
    let mut out = format!("last {} disconnect(s) of {id}, newest first:\n", list.len());
    for r in list {
        out.push_str(&why_line(r));
        out.push('\n');
    }
    out
}

fn retained_table(v: &Value) -> String {
    let rows: Vec<Vec<String>> = v["retained"]
        .as_array()
        .map(|a| a.as_slice())
        .unwrap_or_default()
        .iter()
        .map(|m| {
            vec![
                s(&m["topic"]),
                s(&m["qos"]),
                s(&m["bytes"]),
                s(&m["payload"]),
            ]
        })
        .collect();
    let mut out = table(&["TOPIC", "QOS", "BYTES", "PAYLOAD"], &rows);
    if let Some(next) = v["next"].as_str() {
        out.push_str(&format!("more: the next page is --after '{next}'\n"));
    }
    out
}

/// What a reload did: a line per part, failures with file:line: cause.
fn reload_text(v: &Value) -> String {
    let mut out = String::new();
    for r in v["reloaded"].as_array().into_iter().flatten() {
        let revoked = r["revoked"].as_u64().unwrap_or(0);
        out.push_str(&format!("reloaded {}", s(&r["what"])));
        if revoked > 0 {
            out.push_str(&format!(
                " ({revoked} clients closed: their login no longer passes)"
            ));
        }
        out.push('\n');
    }
    for f in v["failed"].as_array().into_iter().flatten() {
        out.push_str(&format!(
            "NOT reloaded {} (the previous one stays in force): {}\n",
            s(&f["what"]),
            s(&f["cause"])
        ));
    }
    if out.is_empty() {
        out.push_str("nothing to reload (no TLS listener, password, ACL or JWT file)\n");
    }
    out
}

fn stats_text(v: &Value) -> String {
    let mut out = String::new();
    let mut walk = |prefix: &str, v: &Value| {
        if let Value::Object(map) = v {
            for (k, val) in map {
                out.push_str(&format!("{prefix}{k:<24}{}\n", s(val)));
            }
        }
    };
    let mut flat = v.clone();
    let nested: Vec<(String, Value)> = ["messages_dropped", "disconnects"]
        .iter()
        .filter_map(|k| {
            flat.as_object_mut()?
                .remove(*k)
                .map(|n| ((*k).to_owned(), n))
        })
        .collect();
    walk("", &flat);
    for (name, n) in nested {
        walk(&format!("{name}."), &n);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_keep_alive_close_reads_as_words() {
        let r = serde_json::json!({
            "at_ms": 1_764_870_000_000u64,
            "detail": "keep alive expired after 7.500 s of silence with K = 5 s",
            "reason_code": 0x8D, "will": "publish", "address": "10.0.0.7:5555",
            "connected_secs": 12.34,
        });
        assert_eq!(
            why_line(&r),
            "2025-12-04 17:40:00 UTC  keep alive expired after 7.500 s of silence with K = 5 s; \
             will published (reason code 0x8D, from 10.0.0.7:5555, connected 12.3 s)"
        );
        let mut with_traffic = r.clone();
        for (k, n) in [
            ("packets_in", 3),
            ("bytes_in", 40),
            ("packets_out", 2),
            ("bytes_out", 9),
        ] {
            with_traffic[k] = serde_json::json!(n);
        }
        assert!(why_line(&with_traffic)
            .ends_with("connected 12.3 s; in 3 packets / 40 B, out 2 packets / 9 B)"));
        assert_eq!(utc(0), "1970-01-01 00:00:00 UTC");
        assert_eq!(utc(951_782_400_000), "2000-02-29 00:00:00 UTC");
    }

    #[test]
    fn responses_plain_and_chunked_are_read() {
        let plain = b"HTTP/1.1 404 Not Found\r\ncontent-length: 2\r\n\r\n{}";
        assert_eq!(parse_response(plain).unwrap(), (404, "{}".into()));
        let chunked =
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\n{\"a\r\n3\r\n\":1\r\n1\r\n}\r\n0\r\n\r\n";
        assert_eq!(parse_response(chunked).unwrap(), (200, "{\"a\":1}".into()));
        assert!(parse_response(b"garbage").is_err());
        assert!(
            parse_response(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n").is_err()
        );
    }
}
