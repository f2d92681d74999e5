use super::*;

fn parse(text: &str) -> Result<BrokerConfig, ConfigError> {
    let path = Path::new("vigil.toml");
    let c = BrokerConfig::parse(text, path)?;
    c.validate(path)?;
    Ok(c)
}

#[test]
fn empty_file_is_the_default_broker() {
    let c = parse("").unwrap();
    assert_eq!(c, BrokerConfig::default());
    assert_eq!(c.listen_addr().to_string(), "127.0.0.1:1883");
    assert!(c.keepalive.allow_zero_keepalive);
    assert_eq!(c.keepalive.max_keepalive, u16::MAX);
}

#[test]
fn keys_override_defaults() {
    let c = parse(
        "[listener]\nport = 2883\nbind = \"127.0.0.1\"\nworkers = 3\n\n[keepalive]\nmax_keepalive = 60\nv3_out_of_range = \"refuse\"\n",
    )
    .unwrap();
    assert_eq!(c.listen_addr().to_string(), "127.0.0.1:2883");
    assert_eq!(c.listener.workers, 3);
    assert_eq!(
        c.listener.worker_threads(16),
        3,
        "an explicit count is kept"
    );
    let default = BrokerConfig::default().listener;
    assert_eq!(default.workers, 0);
    assert_eq!(
        [1, 2, 4, 16].map(|cores| default.worker_threads(cores)),
        [1, 1, 3, 15],
        "0: one per core but one, at least one"
    );
    assert_eq!(c.keepalive.max_keepalive, 60);
    assert_eq!(c.keepalive.v3_out_of_range, OutOfRangePolicy::Refuse);
    assert_eq!(c.limits, LimitsConfig::default());
}

#[test]
fn server_topic_aliases_default_on_and_can_be_turned_off() {
    assert!(parse("").unwrap().limits.server_topic_aliases);
    let c = parse("[limits]\nserver_topic_aliases = false\n").unwrap();
    assert!(!c.limits.server_topic_aliases);
    let err = parse("[limits]\nserver_topic_aliases = 1\n").unwrap_err();
    assert!(err.to_string().starts_with("vigil.toml:2:"), "{err}");
}

#[test]
fn slow_consumer_policy_is_read_and_a_wrong_one_named() {
    assert_eq!(
        BrokerConfig::default().sessions.slow_consumer,
        SlowConsumerPolicy::Disconnect
    );
    let c = parse("[sessions]\nslow_consumer = \"drop\"\nslow_consumer_wait_ms = 50\n").unwrap();
    assert_eq!(c.sessions.slow_consumer, SlowConsumerPolicy::Drop);
    assert_eq!(c.sessions.slow_consumer.as_str(), "drop");
    assert_eq!(c.sessions.slow_consumer_wait_ms, 50);
    let err = parse("[sessions]\nslow_consumer = \"wait\"\n").unwrap_err();
    assert!(err.to_string().starts_with("vigil.toml:2:"), "{err}");
}

#[test]
fn unknown_key_names_file_line_and_key() {
    let err = parse("[listener]\nport = 1883\nprot = 1\n").unwrap_err();
    let msg = err.to_string();
    assert!(msg.starts_with("vigil.toml:3:"), "{msg}");
    assert!(msg.contains("prot"), "{msg}");
}

#[test]
fn wrong_type_names_line_and_key() {
    let err = parse("[keepalive]\n\nmax_keepalive = \"sixty\"\n").unwrap_err();
    let msg = err.to_string();
    assert!(msg.starts_with("vigil.toml:3:"), "{msg}");
    assert!(
        msg.contains("max_keepalive") || msg.contains("u16") || msg.contains("string"),
        "{msg}"
    );
}

#[test]
fn out_of_range_value_is_an_error() {
    let err = parse("[listener]\nport = 70000\n").unwrap_err();
    assert!(err.to_string().starts_with("vigil.toml:2:"), "{err}");
}

#[test]
fn contradictory_limits_are_refused() {
    let err = parse("[keepalive]\nmin_keepalive = 100\nmax_keepalive = 10\n").unwrap_err();
    assert!(err.to_string().contains("min_keepalive (100)"), "{err}");
}

#[test]
fn the_documented_complete_file_is_the_default_broker() {
    // docs/configuration.md shows every key with its default: keep it true.
    let doc = include_str!("../../../../docs/configuration.md");
    let block = doc
        .split("```toml\n")
        .nth(1)
        .and_then(|rest| rest.split("```").next())
        .expect("a toml block in docs/configuration.md");
    assert_eq!(parse(block).unwrap(), BrokerConfig::default());
    // The [admin] and [cluster] lines are comments there (each table turns
    // its feature on).
    let (block_without_cluster, cluster_part) = block
        .split_once("# [cluster]")
        .expect("a commented [cluster] table in the complete file");
    let cluster_block = format!("[cluster]{cluster_part}").replace("# node_id", "node_id");
    let cluster_block = cluster_block
        .replace("# bind", "bind")
        .replace("# seeds", "seeds");
    assert_eq!(
        parse(&cluster_block).unwrap().cluster,
        Some(ClusterConfig {
            node_id: 1,
            ..ClusterConfig::default()
        })
    );
    let admin_block = block_without_cluster
        .replace("# [admin]", "[admin]")
        .replace("# bind", "bind")
        .replace("# port", "port");
    assert_eq!(
        parse(&admin_block).unwrap().admin,
        Some(AdminConfig::default())
    );
    // Every key the parser knows, section by section, read from the
    // parser's own "expected one of" list so a new key cannot be missed.
    for section in [
        "listener",
        "keepalive",
        "limits",
        "sessions",
        "store",
        "auth",
        "sys",
        "admin",
        "cluster",
    ] {
        let err = parse(&format!("[{section}]\nno_such_key = 1\n")).unwrap_err();
        let msg = err.to_string();
        let expected = msg
            .split_once("expected")
            .map(|(_, list)| list)
            .unwrap_or_else(|| panic!("no key list in {msg}"));
        let keys: Vec<&str> = expected.split('`').skip(1).step_by(2).collect();
        assert!(!keys.is_empty(), "{msg}");
        for key in keys {
            assert!(
                doc.contains(&format!("| `{key}` |")),
                "[{section}] {key} has no row in docs/configuration.md"
            );
            assert!(
                block.contains(&format!("{key} =")),
                "[{section}] {key} is missing from the complete file"
            );
        }
    }
}

#[test]
fn listeners_are_read_with_their_tls_tables() {
    let c = parse(
        r#"
[listener]
workers = 2

[[listeners]]
port = 1883

[[listeners]]
port = 8883
[listeners.tls]
cert = "server.crt"
key = "server.key"
ca = "ca.pem"
require_client_cert = true
min_version = "1.3"
identity = "san"

[[listeners]]
bind = "127.0.0.1"
port = 8080
protocol = "ws"
max_connections = 500

[[listeners]]
port = 8443
protocol = "ws"
path = "/"
tls = { cert = "server.crt", key = "server.key" }
"#,
    )
    .unwrap();
    let l = c.effective_listeners();
    assert_eq!(
        l.iter()
            .map(|l| (l.kind(), l.addr().to_string()))
            .collect::<Vec<_>>(),
        [
            ("mqtt", "127.0.0.1:1883".to_string()),
            ("mqtt+tls", "127.0.0.1:8883".to_string()),
            ("ws", "127.0.0.1:8080".to_string()),
            ("ws+tls", "127.0.0.1:8443".to_string()),
        ]
    );
    let tls = l[1].tls.as_ref().unwrap();
    assert_eq!(tls.ca.as_deref(), Some(Path::new("ca.pem")));
    assert!(tls.require_client_cert);
    assert_eq!(tls.min_version, TlsMinVersion::V1_3);
    assert_eq!(tls.identity, TlsIdentity::San);
    assert_eq!(l[3].tls.as_ref().unwrap().identity, TlsIdentity::Cn);
    assert_eq!(l[2].path, "/mqtt");
    assert_eq!(l[2].max_connections, 500);
    assert_eq!(l[0].max_connections, 100_000);
    assert_eq!(l[3].path, "/");
    assert_eq!(l[3].tls.as_ref().unwrap().min_version, TlsMinVersion::V1_2);
    assert_eq!(c.listener.workers, 2);
}

#[test]
fn the_old_listener_table_is_one_plain_listener() {
    let c = parse("[listener]\nport = 2883\nmax_connections = 7\n").unwrap();
    let l = c.effective_listeners();
    assert_eq!(l.len(), 1);
    assert_eq!(
        (l[0].kind(), l[0].port, l[0].max_connections),
        ("mqtt", 2883, 7)
    );
}

#[test]
fn listener_mistakes_are_named() {
    let err = parse("[listener]\nport = 1883\n[[listeners]]\nport = 8883\n").unwrap_err();
    assert!(
        err.to_string()
            .contains("[listener] port describe the single listener"),
        "{err}"
    );
    let err = parse("[[listeners]]\nport = 1883\n[[listeners]]\nport = 1883\n").unwrap_err();
    assert!(
        err.to_string()
            .contains("127.0.0.1:1883 is given to two listeners"),
        "{err}"
    );
    let err = parse("[[listeners]]\nport = 80\nprotocol = \"ws\"\npath = \"mqtt\"\n").unwrap_err();
    assert!(
        err.to_string().contains("listeners[0] (ws port 80): path"),
        "{err}"
    );
    let err = parse(
        "[[listeners]]\nport = 8883\n[listeners.tls]\ncert = \"c\"\nkey = \"k\"\nrequire_client_cert = true\n",
    )
    .unwrap_err();
    assert!(
        err.to_string().contains("require_client_cert needs tls.ca"),
        "{err}"
    );
    let err = parse(
        "[[listeners]]\nport = 8883\n[listeners.tls]\ncert = \"c\"\nkey = \"k\"\nca = \"ca\"\nuse_identity_as_username = true\n",
    )
    .unwrap_err();
    assert!(
        err.to_string().contains(
            "listeners[0] (mqtt+tls port 8883): tls.use_identity_as_username needs tls.require_client_cert = true"
        ),
        "{err}"
    );
    let ok = parse(
        "[[listeners]]\nport = 8883\n[listeners.tls]\ncert = \"c\"\nkey = \"k\"\nca = \"ca\"\nrequire_client_cert = true\nuse_identity_as_username = true\n",
    )
    .unwrap();
    assert!(
        ok.listeners[0]
            .tls
            .as_ref()
            .unwrap()
            .use_identity_as_username
    );
    assert!(ok.listeners[0].logs_in_by_certificate());
    assert!(!ListenerEntry::mqtt(default_bind(), 1883).logs_in_by_certificate());
    let err = parse("[[listeners]]\nport = 1\nprotocol = \"quic\"\n").unwrap_err();
    assert!(err.to_string().starts_with("vigil.toml:3:"), "{err}");
    let err = parse("[[listeners]]\nport = 1\n[listeners.tls]\ncert = \"c\"\nkey = \"k\"\nmin_version = \"1.1\"\n").unwrap_err();
    assert!(
        err.to_string().contains("min_version") || err.to_string().contains("1.2"),
        "{err}"
    );
    let err = parse("[[listeners]]\nbind = \"127.0.0.1\"\n").unwrap_err();
    assert!(err.to_string().contains("port"), "{err}");
}

#[test]
fn every_listeners_key_is_documented() {
    let doc = include_str!("../../../../docs/configuration.md");
    for text in [
        "[[listeners]]\nno_such_key = 1\n",
        "[[listeners]]\nport = 1\n[listeners.tls]\nno_such_key = 1\n",
    ] {
        let msg = parse(text).unwrap_err().to_string();
        let expected = msg
            .split_once("expected")
            .map(|(_, l)| l)
            .unwrap_or_else(|| panic!("{msg}"));
        let keys: Vec<&str> = expected.split('`').skip(1).step_by(2).collect();
        assert!(!keys.is_empty(), "{msg}");
        for key in keys {
            assert!(
                doc.contains(&format!("| `{key}` |")),
                "{key} has no row in docs/configuration.md"
            );
        }
    }
}

#[test]
fn admin_is_off_unless_its_table_is_present_and_refuses_an_open_bind_without_token() {
    assert_eq!(parse("").unwrap().admin, None);
    assert_eq!(parse("").unwrap().sys.interval, 10);
    let c = parse("[admin]\n").unwrap();
    assert_eq!(c.admin.unwrap().addr().to_string(), "127.0.0.1:18083");
    let err = parse("[admin]\nbind = \"0.0.0.0\"\n").unwrap_err();
    assert!(err.to_string().contains("admin.bind (0.0.0.0)"), "{err}");
    let c = parse("[admin]\nbind = \"0.0.0.0\"\ntoken = \"s3cret\"\n").unwrap();
    assert_eq!(
        c.admin.unwrap().resolve_token().unwrap().as_deref(),
        Some("s3cret")
    );
    let err = parse("[admin]\ntoken = \"a\"\ntoken_file = \"/t\"\n").unwrap_err();
    assert!(err.to_string().contains("both set"), "{err}");
}

#[test]
fn missing_file_names_the_path() {
    let err = BrokerConfig::load(Path::new("/nonexistent/vigil.toml")).unwrap_err();
    assert!(err.to_string().contains("/nonexistent/vigil.toml"), "{err}");
    // The cause travels as the source only: printing the chain names it once.
    let cause = std::error::Error::source(&err).map(ToString::to_string);
    assert!(
        cause.as_deref().is_some_and(|c| c.contains("No such file")),
        "{cause:?}"
    );
    assert!(!err.to_string().contains("No such file"), "{err}");
}
