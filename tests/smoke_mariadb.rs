//! The dev env's MariaDB is real: a row written through SQL reads back, and its
//! change shows up in the binlog (`SHOW BINLOG EVENTS`) as a row event, read
//! with the replication user's privileges.

mod common;

use mysql_async::prelude::Queryable;

#[tokio::test]
async fn row_written_is_read_back_and_logged_in_the_binlog() {
    let env = common::dev_env();
    let db = common::unique("smoke_mariadb");
    let mut admin = mysql_async::Conn::from_url(&env.mysql_admin_url)
        .await
        .expect("connect to the dev-env MariaDB as root (scripts/dev-env.sh up)");
    admin
        .query_drop(format!(
            "CREATE DATABASE {db}; CREATE TABLE {db}.t (id INT PRIMARY KEY, name VARCHAR(20))"
        ))
        .await
        .unwrap();
    let (file, _pos): (String, u64) = {
        let row: mysql_async::Row = admin
            .query_first("SHOW MASTER STATUS")
            .await
            .unwrap()
            .expect("binlog is on");
        (row.get(0).unwrap(), row.get(1).unwrap())
    };
    admin
        .query_drop(format!("INSERT INTO {db}.t VALUES (7, 'seven')"))
        .await
        .unwrap();
    let name: Option<String> = admin
        .query_first(format!("SELECT name FROM {db}.t WHERE id = 7"))
        .await
        .unwrap();
    assert_eq!(name.as_deref(), Some("seven"));

    // The replication user (least privileges) can read the binlog's events.
    let mut repl = mysql_async::Conn::from_url(&env.mysql_url)
        .await
        .expect("connect as the replication user");
    let events: Vec<mysql_async::Row> = repl
        .query(format!("SHOW BINLOG EVENTS IN '{file}'"))
        .await
        .unwrap();
    let infos: Vec<(String, String)> = events
        .iter()
        .map(|r| {
            (
                r.get::<String, _>(5).unwrap_or_default(),
                r.get::<String, _>(2).unwrap_or_default(),
            )
        })
        .collect();
    let table_map = infos
        .iter()
        .position(|(info, kind)| kind == "Table_map" && info.contains(&format!("({db}.t)")))
        .unwrap_or_else(|| panic!("no Table_map for {db}.t in {file}: {infos:?}"));
    assert!(
        infos[table_map + 1].1.starts_with("Write_rows"),
        "expected a Write_rows event after the table map, got {:?}",
        infos[table_map + 1]
    );
    admin
        .query_drop(format!("DROP DATABASE {db}"))
        .await
        .unwrap();
}
