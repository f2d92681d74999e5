//! Table tests of Mosquitto's ACL semantics.

use super::*;

const ACL: &str = "\
# anonymous clients: topic lines before the first user line
topic read public/#
topic deny public/secret

user alice
topic readwrite alice/#
topic write sensors/+/set
topic read sensors/#
topic deny sensors/private/#
topic $SYS/broker/#

user bob with spaces
topic read sensors/#
# no access word: readwrite
topic bob/inbox

pattern read devices/%c/#
pattern write devices/%u/out
pattern deny devices/%c/locked
";

fn acl() -> Acl {
    Acl::parse(ACL, Path::new("acl")).unwrap()
}

fn client<'a>(id: &'a str, user: Option<&'a str>) -> ClientRef<'a> {
    ClientRef {
        client_id: id,
        username: user,
    }
}

#[test]
fn publish_and_read_table() {
    let acl = acl();
    let alice = client("a1", Some("alice"));
    let bob = client("b1", Some("bob with spaces"));
    let anon = client("anon", None);
    let mallory = client("m", Some("mallory"));
    // (who, topic, may read, may write)
    let table: &[(&ClientRef<'_>, &str, bool, bool)] = &[
        (&alice, "alice/x/y", true, true),
        (&alice, "alice", true, true),
        (&alice, "sensors/t1/set", true, true),
        (&alice, "sensors/t1", true, false),
        // deny wins over the read grant, and over write too
        (&alice, "sensors/private/t", false, false),
        (&alice, "sensors/private", false, false),
        (&alice, "public/x", false, false),
        (&alice, "$SYS/broker/uptime", true, true),
        (&bob, "sensors/t1", true, false),
        (&bob, "bob/inbox", true, true),
        (&bob, "alice/x", false, false),
        (&anon, "public/x", true, false),
        (&anon, "public/secret", false, false),
        (&anon, "sensors/t1", false, false),
        // a user the file does not name gets the patterns only
        (&mallory, "sensors/t1", false, false),
        (&mallory, "devices/m/status", true, false),
        (&mallory, "devices/mallory/out", false, true),
        (&mallory, "devices/other/status", false, false),
        // pattern deny beats pattern read
        (&mallory, "devices/m/locked", false, false),
    ];
    for (who, topic, read, write) in table {
        assert_eq!(acl.may_read(who, topic), *read, "{who:?} read {topic}");
        assert_eq!(acl.may_write(who, topic), *write, "{who:?} write {topic}");
    }
}

#[test]
fn dollar_topics_match_only_dollar_entries() {
    let acl = Acl::parse("topic read #\ntopic read +/x\n", Path::new("acl")).unwrap();
    let anon = client("c", None);
    assert!(acl.may_read(&anon, "a/b"));
    assert!(!acl.may_read(&anon, "$SYS/broker/uptime"));
    assert!(!acl.may_read(&anon, "$x"));
    assert!(!acl.may_subscribe(&anon, "$SYS/#"));
    assert!(acl.may_subscribe(&anon, "#"));
    let acl = Acl::parse("topic read $SYS/#\n", Path::new("acl")).unwrap();
    assert!(acl.may_read(&anon, "$SYS/broker/uptime"));
    assert!(!acl.may_read(&anon, "a"));
}

#[test]
fn patterns_skip_ids_with_wildcards_and_missing_user_names() {
    let acl = Acl::parse(
        "pattern read c/%c/#\npattern read u/%u\npattern read x%c\n",
        Path::new("acl"),
    )
    .unwrap();
    // A client id of "+" must not turn c/%c/# into c/+/#.
    assert!(!acl.may_read(&client("+", None), "c/other/t"));
    assert!(!acl.may_read(&client("#", None), "c/#/t"));
    assert!(!acl.may_read(&client("a", Some("#")), "u/x"));
    assert!(acl.may_read(&client("a", Some("u1")), "u/u1"));
    // anonymous: %u cannot apply
    assert!(!acl.may_read(&client("a", None), "u/"));
    assert!(acl.may_read(&client("a", None), "c/a/t"));
    // only whole levels are substituted
    assert!(acl.may_read(&client("a", None), "x%c"));
    assert!(!acl.may_read(&client("a", None), "xa"));
}

#[test]
fn subscribe_is_refused_when_nothing_it_matches_is_readable() {
    let acl = acl();
    let alice = client("a1", Some("alice"));
    let anon = client("anon", None);
    // (who, filter, granted)
    let table: &[(&ClientRef<'_>, &str, bool)] = &[
        (&alice, "sensors/#", true),
        (&alice, "#", true),
        (&alice, "+/t1", true),
        (&alice, "sensors/private/#", false),
        (&alice, "sensors/private/+/x", false),
        // write-only grant: nothing readable
        (&alice, "nothing/here", false),
        (&alice, "$SYS/#", true),
        (&alice, "$SYS/other", false),
        (&anon, "public/#", true),
        (&anon, "public/secret", false),
        (&anon, "sensors/#", false),
        (&anon, "#", true),
    ];
    for (who, filter, granted) in table {
        assert_eq!(
            acl.may_subscribe(who, filter),
            *granted,
            "{who:?} subscribe {filter}"
        );
    }
}

#[test]
fn filter_relations() {
    for (a, b, want) in [
        ("a/#", "a", true),
        ("a/+", "+/b", true),
        ("a/+", "b/+", false),
        ("a/b/c", "a/+", false),
        ("#", "$SYS/x", false),
        ("+/x", "$SYS/x", false),
        ("$SYS/#", "$SYS/x", true),
    ] {
        assert_eq!(intersects(a, b), want, "intersects({a}, {b})");
        assert_eq!(intersects(b, a), want, "intersects({b}, {a})");
    }
    for (by, filter, want) in [
        ("a/#", "a/b/+", true),
        ("a/#", "a", true),
        ("a/+", "a/b", true),
        ("a/+", "a/#", false),
        ("a/b", "a/+", false),
        ("#", "$SYS/#", false),
        ("#", "+/x", true),
    ] {
        assert_eq!(covers(by, filter), want, "covers({by}, {filter})");
    }
}

#[test]
fn no_acl_entries_deny_everything() {
    let acl = Acl::parse("# nothing\n", Path::new("acl")).unwrap();
    let c = client("c", Some("u"));
    assert!(!acl.may_read(&c, "a"));
    assert!(!acl.may_write(&c, "a"));
    assert!(!acl.may_subscribe(&c, "#"));
}

#[test]
fn bad_lines_name_file_and_line() {
    for (text, line) in [
        ("user alice\ntopic read a/#/b\n", 2),
        ("topic\n", 1),
        ("# ok\nfoo bar\n", 2),
        ("user\n", 1),
    ] {
        let err = Acl::parse(text, Path::new("/etc/acl")).unwrap_err();
        assert!(
            err.to_string().starts_with(&format!("/etc/acl:{line}: ")),
            "{text:?}: {err}"
        );
    }
}
