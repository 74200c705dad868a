//! The command line as a user meets it: help texts, exit codes, and the
//! messages for a bad configuration.

mod common;

use std::process::{Command, Output};

fn bridge(args: &[&str], config: Option<&str>) -> Output {
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_binlog-bridge"));
    if let Some(text) = config {
        let path = dir.path().join("bb.toml");
        std::fs::write(&path, text).unwrap();
        cmd.arg("--config").arg(&path);
    }
    // Overrides from the test's own environment must not leak in.
    for (k, _) in std::env::vars() {
        if k.starts_with("BINLOG_BRIDGE_") {
            cmd.env_remove(k);
        }
    }
    cmd.args(args).output().expect("run binlog-bridge")
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

#[test]
fn help_describes_every_subcommand_and_flag() {
    let top = text(&bridge(&["--help"], None));
    for word in [
        "run",
        "check",
        "status",
        "checkpoint",
        "--config",
        "--log-format",
        "--log-level",
    ] {
        assert!(top.contains(word), "top-level help lacks {word}:\n{top}");
    }
    let cases: [(&[&str], &[&str]); 5] = [
        (&["run", "--help"], &["leader", "--config"]),
        (&["check", "--help"], &["--offline", "pass/fail"]),
        (&["status", "--help"], &["--json", "leader"]),
        (&["checkpoint", "show", "--help"], &["--json"]),
        (
            &["checkpoint", "set", "--help"],
            &[
                "--gtid",
                "--force",
                "--unchecked",
                "POSITION",
                "FILE:OFFSET",
            ],
        ),
    ];
    for (args, words) in cases {
        let out = bridge(args, None);
        assert!(out.status.success(), "{args:?}");
        let t = text(&out);
        for w in words {
            assert!(t.contains(w), "{args:?} help lacks {w}:\n{t}");
        }
    }
}

const GOOD: &str = "[mysql]\nurl = \"mysql://bridge@127.0.0.1:3306\"\nserver_id = 1001\n";

#[test]
fn offline_check_passes_a_good_config() {
    let out = bridge(&["check", "--offline"], Some(GOOD));
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("pass  config"));
}

#[test]
fn offline_check_passes_the_example_config() {
    let example = include_str!("../binlog-bridge.example.toml");
    let out = bridge(&["check", "--offline"], Some(example));
    assert!(out.status.success(), "{}", text(&out));
}

#[test]
fn bad_configs_exit_2_naming_what_is_wrong() {
    let cases = [
        (
            format!("{GOOD}[kafka]\ntpoic = \"x\"\n"),
            "unknown field `tpoic`",
        ),
        (
            "[mysql]\nurl = \"not a url\"\nserver_id = 1\n".to_string(),
            "mysql.url = \"not a url\" is not a URL",
        ),
        (
            format!("{GOOD}[etcd]\nendpoints = []\n"),
            "etcd.endpoints is empty",
        ),
        (
            format!("{GOOD}[etcd]\nlease_ttl_secs = 0\n"),
            "etcd.lease_ttl_secs = 0 is out of range",
        ),
        ("[mysql\n".to_string(), "is not valid TOML"),
    ];
    for (config, expected) in cases {
        let out = bridge(&["check", "--offline"], Some(&config));
        assert_eq!(out.status.code(), Some(2), "{}", text(&out));
        assert!(
            text(&out).contains(expected),
            "expected {expected:?} in:\n{}",
            text(&out)
        );
    }
}

#[test]
fn missing_config_file_exits_2_and_says_what_to_do() {
    let out = bridge(
        &["--config", "/nonexistent/bb.toml", "check", "--offline"],
        None,
    );
    assert_eq!(out.status.code(), Some(2));
    let t = text(&out);
    assert!(
        t.contains("/nonexistent/bb.toml") && t.contains("--config"),
        "{t}"
    );
}

#[test]
fn online_check_passes_against_the_dev_env() {
    let env = common::dev_env();
    let config = format!(
        "[mysql]\nurl = \"{}\"\nserver_id = 1001\n[etcd]\nendpoints = {:?}\n[kafka]\nbrokers = \"{}\"\n",
        env.mysql_url, env.etcd_endpoints, env.kafka_brokers
    );
    let out = bridge(&["check"], Some(&config));
    let t = text(&out);
    assert!(out.status.success(), "{t}");
    assert!(
        t.contains("pass  mysql binlog_format: binlog_format = ROW"),
        "{t}"
    );
    assert!(t.contains("checks passed") && !t.contains("FAIL"), "{t}");
    assert!(t.contains("pass  mysql privileges"), "{t}");
    assert!(!t.contains("bridge:bridge"), "password printed: {t}");
}

#[test]
fn online_check_fails_with_exit_1_when_servers_are_unreachable() {
    let port = common::free_port();
    let config = format!(
        "[mysql]\nurl = \"mysql://u:hunter2@127.0.0.1:{port}\"\nserver_id = 1\n[etcd]\nendpoints = [\"127.0.0.1:{port}\"]\n[kafka]\nbrokers = \"127.0.0.1:{port}\"\n"
    );
    let out = bridge(&["check"], Some(&config));
    let t = text(&out);
    assert_eq!(out.status.code(), Some(1), "{t}");
    assert!(t.contains("FAIL  mysql connection"), "{t}");
    assert!(t.contains(&format!("FAIL  etcd 127.0.0.1:{port}")), "{t}");
    assert!(t.contains("FAIL  kafka"), "{t}");
    assert!(t.contains("3 of 3 checks failed"), "{t}");
    assert!(!t.contains("hunter2"), "password printed: {t}");
}

#[test]
fn offline_check_passes_the_compose_demo_config() {
    let demo = include_str!("../deploy/binlog-bridge.toml");
    let out = bridge(&["check", "--offline"], Some(demo));
    assert!(out.status.success(), "{}", text(&out));
}
