//! The README's metrics table lists exactly the metrics the bridge exports.

use binlog_bridge::ops::metrics::METRICS;

#[test]
fn readme_lists_every_exported_metric_and_no_other() {
    let readme = include_str!("../README.md");
    let listed: Vec<&str> = readme
        .lines()
        .filter(|l| l.starts_with("| `binlog_bridge_"))
        .flat_map(|l| l.split('`').skip(1).step_by(2))
        .filter(|n| n.starts_with("binlog_bridge_"))
        .map(|n| n.split('{').next().unwrap_or(n))
        .collect();
    for (name, _, _) in METRICS {
        assert!(listed.contains(&name), "README lacks {name}");
    }
    for name in &listed {
        assert!(
            METRICS.iter().any(|(m, _, _)| m == name),
            "README lists {name}, which is not exported"
        );
    }
}
