//! The README stands alone and renders (issue 13): it does not send readers
//! to files they do not have, and its configuration table is one table.

const README: &str = include_str!("../README.md");

#[test]
fn the_readme_does_not_point_outside_the_repository() {
    for (n, line) in README.lines().enumerate() {
        assert!(
            !line.contains("SPEC.md") && !line.contains("SPEC §") && !line.contains("SPEC's"),
            "README.md:{}: refers to SPEC, which users do not have: {line}",
            n + 1
        );
    }
}

/// A blank line inside a Markdown table ends it: the rows after it render as
/// text. Every `| key |` row of the configuration table must be in one block.
#[test]
fn the_configuration_table_is_one_table() {
    let start = README
        .find("### Configuration (`tagproxy.toml`)")
        .expect("the section");
    let section = &README[start..];
    let section = &section[..section[4..].find("\n### ").map_or(section.len(), |i| i + 4)];
    let lines: Vec<&str> = section.lines().collect();
    let first = lines.iter().position(|l| l.starts_with("| key |")).unwrap();
    let last = lines.iter().rposition(|l| l.starts_with('|')).unwrap();
    for (i, line) in lines[first..=last].iter().enumerate() {
        assert!(
            line.starts_with('|'),
            "line {} of the configuration table is not a row: {line:?}",
            i + 1
        );
    }
    for key in [
        "[bots] skip_events",
        "[consent] enabled",
        "[consent.texts.<lang>]",
    ] {
        assert!(
            lines[first..=last].iter().any(|l| l.contains(key)),
            "{key} is not in the table"
        );
    }
}

/// Saying plainly that command-line clients see no script.
#[test]
fn the_readme_says_curl_counts_as_a_bot() {
    assert!(README.contains("curl, wget, HTTP libraries and headless browsers count as\nbots"));
    assert!(README.contains("curl -A"));
}
