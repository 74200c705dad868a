//! `binlog-bridge snapshot db.table...`: check the tables, then leave a
//! request in etcd for the leader (see [`super::ondemand`]). Exit codes as
//! in `cli.rs`: 0 requested, 1 a server unreachable, 2 a table or setting
//! that cannot work (named, with what to do).

use std::process::ExitCode;
use std::time::Duration;

use super::ondemand::{self, parse_table, OnDemandState, Request};
use super::reader::{SnapshotError, SnapshotReader};
use super::requests;
use crate::cli::{EXIT_CONFIG, EXIT_FAILURE};
use crate::config::{Config, Delivery};
use crate::coord::{self, Keys};
use crate::sink::TableFilter;

const TIMEOUT: Duration = Duration::from_secs(5);

fn refuse(e: impl std::fmt::Display) -> ExitCode {
    eprintln!("error: {e}");
    ExitCode::from(EXIT_CONFIG)
}

fn fail(e: impl std::fmt::Display) -> ExitCode {
    eprintln!("error: {e}");
    ExitCode::from(EXIT_FAILURE)
}

/// The tables named, each once, in the order given; or what is wrong.
pub fn check_names(config: &Config, names: &[String]) -> Result<Vec<String>, String> {
    if names.is_empty() {
        return Err("name at least one table to re-snapshot, as db.table".into());
    }
    let filter = TableFilter::new(&config.mysql.include, &config.mysql.exclude);
    let mut out: Vec<String> = Vec::new();
    for n in names {
        let (db, table) = parse_table(n)?;
        if !filter.allows(db, table) {
            return Err(format!(
                "table `{n}` is not streamed by pipeline `{}` (mysql.include / mysql.exclude leave it out); name only tables the pipeline streams",
                config.etcd.pipeline
            ));
        }
        if !out.contains(n) {
            out.push(n.clone());
        }
    }
    Ok(out)
}

/// `binlog-bridge snapshot db.table...`.
pub async fn main(config: &Config, names: &[String]) -> ExitCode {
    let tables = match check_names(config, names) {
        Ok(t) => t,
        Err(e) => return refuse(e),
    };
    if config.kafka.delivery == Delivery::Transactional {
        return refuse("on-demand snapshots run with idempotent or at-least-once delivery in this version, and kafka.delivery = \"transactional\"; set kafka.delivery = \"idempotent\" to re-snapshot tables");
    }
    // Every table must be readable in key order, as for the initial snapshot.
    let mut reader = match SnapshotReader::connect(&config.mysql, "binlog-bridge snapshot").await {
        Ok(r) => r,
        Err(e @ SnapshotError::Unsupported(_)) => return refuse(e),
        Err(e) => return fail(e),
    };
    for t in &tables {
        match reader.table(t).await {
            Ok(_) => {}
            Err(e @ SnapshotError::Unsupported(_)) => return refuse(e),
            Err(e) => return fail(e),
        }
    }
    drop(reader);

    let keys = Keys::from_config(&config.etcd);
    let client = match coord::connect(&config.etcd, TIMEOUT).await {
        Ok(c) => c,
        Err(e) => return fail(e),
    };
    let checkpoint = match coord::checkpoint::read(&client, &keys, TIMEOUT).await {
        Ok(c) => c.map(|s| s.checkpoint),
        Err(e) => return fail(e),
    };
    // `auto` resolves to what the leader's broker offers: the checkpoint says.
    if checkpoint
        .as_ref()
        .and_then(|c| c.extra.get("delivery"))
        .and_then(|v| v.as_str())
        == Some("transactional")
    {
        return refuse("the pipeline's leader runs transactional delivery (kafka.delivery = \"auto\" chose it for this broker), and on-demand snapshots run with idempotent or at-least-once delivery in this version; set kafka.delivery = \"idempotent\" to re-snapshot tables");
    }
    let prefix = ondemand::requests_prefix(&config.etcd.prefix, &config.etcd.pipeline);
    let queued = match requests::list(&client, &prefix, TIMEOUT).await {
        Ok(q) => q,
        Err(e) => return fail(e),
    };
    let now = coord::now_ms();
    let request = Request {
        id: ondemand::new_id(now, std::process::id()),
        tables: tables.clone(),
        requested_at_ms: now,
        by: format!(
            "{} pid {}",
            coord::Identity::current("").host,
            std::process::id()
        ),
    };
    let key = match requests::put(&client, &prefix, &request, TIMEOUT).await {
        Ok(k) => k,
        Err(e) => return fail(e),
    };
    println!("request {} for {}", request.id, tables.join(", "));
    println!("key     {key}");
    let running = checkpoint
        .as_ref()
        .and_then(|c| OnDemandState::from_extra(&c.extra).ok().flatten());
    if let Some(r) = running {
        println!(
            "queued  behind the running request {} ({} queued before this one)",
            r.id,
            queued.len().saturating_sub(1)
        );
    } else if !queued.is_empty() {
        println!("queued  behind {} earlier request(s)", queued.len());
    }
    match coord::election::current_leader(&client, &keys, TIMEOUT).await {
        Ok(Some(_)) => println!(
            "the leader picks it up within a second; follow it with `binlog-bridge status`"
        ),
        Ok(None) => println!(
            "no leader is running now: the request waits until a `binlog-bridge run` process leads"
        ),
        Err(e) => println!(
            "the leader could not be looked up ({e}); the request waits in etcd either way"
        ),
    }
    ExitCode::SUCCESS
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_checked_against_the_filters_and_deduplicated() {
        let config = Config::from_toml_with_env(
            "[mysql]\nurl = \"mysql://r@127.0.0.1:3306\"\nserver_id = 9\ninclude = [\"shop.*\"]\nexclude = [\"shop.secret\"]\n",
            std::path::Path::new("t.toml"),
            Vec::new(),
        )
        .unwrap();
        let names = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(
            check_names(&config, &names(&["shop.a", "shop.b", "shop.a"])).unwrap(),
            ["shop.a", "shop.b"]
        );
        let e = check_names(&config, &names(&["shop.secret"])).unwrap_err();
        assert!(e.contains("`shop.secret` is not streamed"), "{e}");
        let e = check_names(&config, &names(&["other.t"])).unwrap_err();
        assert!(e.contains("mysql.include / mysql.exclude"), "{e}");
        let e = check_names(&config, &names(&["shop"])).unwrap_err();
        assert!(e.contains("write it as db.table"), "{e}");
        assert!(check_names(&config, &[]).is_err());
    }
}
