//! The documents in `docs/` stay true to the tree: every test that
//! `docs/keepalive.md` cites as proof of a rule exists under the name it gives,
//! and every repository file a document links to is there.

use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// `crates/...rs::function` references in backticks.
fn cited_tests(doc: &str) -> Vec<(String, String)> {
    doc.split('`')
        .skip(1)
        .step_by(2)
        .filter_map(|code| code.split_once(".rs::"))
        .map(|(file, function)| (format!("{file}.rs"), function.to_string()))
        .collect()
}

#[test]
fn every_test_cited_in_keepalive_md_exists() {
    let doc = read(&root().join("docs/keepalive.md"));
    let cited = cited_tests(&doc);
    assert!(cited.len() > 40, "only {} citations found", cited.len());
    for (file, function) in cited {
        let source = read(&root().join(&file));
        assert!(
            source.contains(&format!("fn {function}()")),
            "docs/keepalive.md cites {file}::{function}, which does not exist"
        );
    }
}

#[test]
fn every_test_cited_in_cluster_md_exists() {
    let doc = read(&root().join("docs/cluster.md"));
    let cited = cited_tests(&doc);
    assert!(!cited.is_empty(), "no citation found");
    for (file, function) in cited {
        let source = read(&root().join(&file));
        assert!(
            source.contains(&format!("fn {function}()")),
            "docs/cluster.md cites {file}::{function}, which does not exist"
        );
    }
    // The tests it lists by name are in the cluster test files.
    let tests = ["cluster.rs", "cluster_partition.rs", "cluster_members.rs"]
        .map(|f| read(&root().join("crates/vigil/tests").join(f)))
        .concat();
    for name in doc
        .split('`')
        .skip(1)
        .step_by(2)
        .filter(|c| c.contains('_') && !c.contains(['/', ' ', '.', ':', '=']))
        .filter(|c| c.split('_').count() > 4)
        // Metric names are not tests.
        .filter(|c| !c.starts_with("vigil_"))
    {
        assert!(
            tests.contains(&format!("fn {name}()")),
            "docs/cluster.md names the test {name}, which no crates/vigil/tests/cluster*.rs has"
        );
    }
}

#[test]
fn links_between_documents_lead_somewhere() {
    for doc in [
        "README.md",
        "CHANGELOG.md",
        "docs/keepalive.md",
        "docs/architecture.md",
        "docs/configuration.md",
        "docs/cluster.md",
    ] {
        let path = root().join(doc);
        let text = read(&path);
        let dir = path.parent().expect("a parent directory");
        for link in text.split("](").skip(1) {
            let target = link.split(')').next().unwrap_or_default();
            if target.contains("://") || target.starts_with('#') {
                continue;
            }
            assert!(
                dir.join(target).exists(),
                "{doc} links to {target}, which is not in the repository"
            );
        }
        // Spelled in two parts so that a search of the tree for the path
        // finds only real references, not this check.
        let outside = concat!("..", "/shared");
        assert!(
            !text.contains(outside),
            "{doc} points outside the repository"
        );
    }
}
