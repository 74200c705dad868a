//! Parse and validate tests: every message a user can get is checked here.

use super::*;

const MINIMAL: &str = r#"
[mysql]
url = "mysql://repl@127.0.0.1:3306"
server_id = 1001
"#;

fn parse(text: &str) -> Result<Config, ConfigError> {
    Config::from_toml_with_env(text, Path::new("test.toml"), Vec::new())
}

fn parse_env(text: &str, env: &[(&str, &str)]) -> Result<Config, ConfigError> {
    Config::from_toml_with_env(
        text,
        Path::new("test.toml"),
        env.iter().map(|(k, v)| (k.to_string(), v.to_string())),
    )
}

fn invalid(text: &str) -> Vec<String> {
    match parse(text).expect("parses").validate() {
        Err(ConfigError::Invalid(v)) => v,
        other => panic!("expected Invalid, got {other:?}"),
    }
}

#[test]
fn minimal_config_gets_the_reference_defaults() {
    let c = parse(MINIMAL).unwrap();
    c.validate().unwrap();
    assert_eq!(
        c.etcd.endpoints,
        ["127.0.0.1:2379", "127.0.0.1:3379", "127.0.0.1:4379"]
    );
    assert_eq!(c.etcd.lease_ttl_secs, 2);
    assert_eq!(c.etcd.prefix, "/binlog-bridge");
    assert_eq!(c.kafka.topic, "{db}.{table}");
    assert_eq!(c.kafka.format, Format::Debezium);
    assert_eq!(c.kafka.delivery, Delivery::Auto);
    assert_eq!(c.http.listen, "127.0.0.1:9187");
    assert_eq!(c.mysql.start, "earliest");
}

#[test]
fn the_shipped_example_config_is_valid() {
    let text = include_str!("../../binlog-bridge.example.toml");
    let c = parse(text).unwrap();
    c.validate().unwrap();
    assert_eq!(c.kafka.format, Format::Debezium);
}

#[test]
fn typo_key_is_refused_by_name() {
    let text = format!("{MINIMAL}\n[kafka]\ntpoic = \"x\"\n");
    let e = parse(&text).unwrap_err().to_string();
    assert!(e.contains("unknown field `tpoic`"), "{e}");
    assert!(e.contains("kafka"), "{e}");
    assert!(e.contains("expected one of"), "{e}");
}

#[test]
fn unknown_section_is_refused_by_name() {
    let text = format!("{MINIMAL}\n[kafak]\nbrokers = \"x\"\n");
    let e = parse(&text).unwrap_err().to_string();
    assert!(e.contains("unknown field `kafak`"), "{e}");
}

#[test]
fn missing_required_key_is_named() {
    let e = parse("[mysql]\nurl = \"mysql://a@b:1\"\n")
        .unwrap_err()
        .to_string();
    assert!(e.contains("server_id"), "{e}");
}

#[test]
fn wrong_type_names_the_key() {
    let text = format!("{MINIMAL}\n[etcd]\nlease_ttl_secs = \"two\"\n");
    let e = parse(&text).unwrap_err().to_string();
    assert!(e.contains("etcd.lease_ttl_secs"), "{e}");
}

#[test]
fn bad_toml_says_where() {
    let e = parse("[mysql\nurl=").unwrap_err().to_string();
    assert!(e.contains("test.toml is not valid TOML"), "{e}");
    assert!(e.contains("line 1"), "{e}");
}

#[test]
fn unreadable_file_says_what_to_do() {
    let e = Config::load(Path::new("/nonexistent/bb.toml"))
        .unwrap_err()
        .to_string();
    assert!(e.contains("/nonexistent/bb.toml"), "{e}");
    assert!(e.contains("--config"), "{e}");
}

#[test]
fn bad_url_is_refused_and_password_hidden() {
    let v = invalid("[mysql]\nurl = \"mysql//repl:hunter2@127.0.0.1\"\nserver_id = 5\n");
    assert_eq!(v.len(), 1, "{v:?}");
    assert!(v[0].starts_with("mysql.url = "), "{v:?}");
    assert!(v[0].contains("is not a URL"), "{v:?}");
    assert!(!v[0].contains("hunter2"), "{v:?}");

    let v = invalid("[mysql]\nurl = \"postgres://u:hunter2@h:1\"\nserver_id = 5\n");
    assert!(v[0].contains("scheme `postgres` is not supported"), "{v:?}");
    assert!(!v[0].contains("hunter2"), "{v:?}");

    let v = invalid("[mysql]\nurl = \"mysql://127.0.0.1:3306\"\nserver_id = 5\n");
    assert!(v[0].contains("has no user"), "{v:?}");
}

#[test]
fn empty_endpoint_list_is_refused() {
    let v = invalid(&format!("{MINIMAL}\n[etcd]\nendpoints = []\n"));
    assert_eq!(v.len(), 1);
    assert!(v[0].starts_with("etcd.endpoints is empty"), "{v:?}");
}

#[test]
fn bad_endpoints_are_named() {
    let v = invalid(&format!(
        "{MINIMAL}\n[etcd]\nendpoints = [\"127.0.0.1\", \"ftp://h:1\", \"h:99999\", \":2379\"]\n"
    ));
    assert_eq!(v.len(), 4, "{v:?}");
    assert!(v[0].contains("\"127.0.0.1\" has no port"));
    assert!(v[1].contains("\"ftp://h:1\" has an unsupported scheme"));
    assert!(v[2].contains("has a bad port `99999`"));
    assert!(v[3].contains("\":2379\" has no host"));
}

#[test]
fn zero_ttl_is_refused() {
    let v = invalid(&format!("{MINIMAL}\n[etcd]\nlease_ttl_secs = 0\n"));
    assert_eq!(
        v,
        ["etcd.lease_ttl_secs = 0 is out of range; use 1 to 300 (default 2)"]
    );
}

#[test]
fn every_validation_message() {
    let text = r#"
[mysql]
url = "mysql://repl@127.0.0.1:3306"
server_id = 0
password = "x"
password_file = "/p"
start = "binlog.000001"
heartbeat_secs = 0
read_timeout_secs = 0
include = ["orders"]
exclude = ["x"]

[etcd]
prefix = "bb/"
pipeline = "a b"
checkpoint_interval_ms = 0
password = "x"
cert_file = "/c"

[kafka]
brokers = ""
topic = "{database}"
schema_topic = "bad topic"
partitions = 0
replication_factor = 0
key_columns = { "orders" = [] }
properties = { "enable.idempotence" = "false" }

[http]
listen = "localhost"
"#;
    let v = invalid(text);
    let expected = [
        "mysql.server_id = 0 is not allowed; use a number from 1 to 4294967295 that no other replica of the source uses",
        "mysql.password and mysql.password_file are both set; keep one",
        "mysql.start = \"binlog.000001\": invalid position `binlog.000001`: missing `:`; expected FILE:OFFSET or FILE:OFFSET+ROW, e.g. binlog.000003:4567+12; or use earliest, latest, gtid:...",
        "mysql.heartbeat_secs = 0 is out of range; use 1 to 3600",
        "mysql.read_timeout_secs = 0 must be greater than mysql.heartbeat_secs = 0",
        "mysql.include entry \"orders\" is not DB.TABLE; use e.g. \"shop.orders\" or \"shop.*\"",
        "mysql.exclude entry \"x\" is not DB.TABLE; use e.g. \"shop.orders\" or \"shop.*\"",
        "etcd.prefix = \"bb/\" must start with `/` and not end with `/`, e.g. \"/binlog-bridge\"",
        "etcd.pipeline = \"a b\": use letters, digits, `-`, `_` or `.` (not empty)",
        "etcd.checkpoint_interval_ms = 0 is not allowed; use 1 or more (default 1000)",
        "etcd.password is set but etcd.username is not; set both",
        "etcd.cert_file and etcd.key_file go together; set both or neither",
        "kafka.brokers is empty; use e.g. \"127.0.0.1:9092\"",
        "kafka.topic = \"{database}\" has unknown placeholder `{database}`; allowed: {db}, {table}, {pipeline}",
        "kafka.schema_topic = \"bad topic\" is not a valid Kafka topic name; use letters, digits, `.`, `_`, `-` and placeholders",
        "kafka.partitions = 0 must be 1 or more",
        "kafka.replication_factor = 0 must be 1 or more",
        "kafka.key_columns key \"orders\" is not DB.TABLE, e.g. \"shop.orders\"",
        "kafka.key_columns.\"orders\" is empty; list at least one column",
        "kafka.properties.\"enable.idempotence\" is set by the bridge itself and cannot be overridden (delivery guarantees depend on it)",
        "http.listen = \"localhost\" is not an address; use IP:PORT, e.g. \"127.0.0.1:9187\"",
    ];
    assert_eq!(v, expected);
}

#[test]
fn start_positions_parse() {
    assert_eq!(
        StartPosition::parse("earliest"),
        Ok(StartPosition::Earliest)
    );
    assert_eq!(StartPosition::parse("latest"), Ok(StartPosition::Latest));
    assert_eq!(
        StartPosition::parse("gtid:0-1-100"),
        Ok(StartPosition::Gtid("0-1-100".into()))
    );
    assert_eq!(
        StartPosition::parse("gtid:"),
        Err("empty GTID; use gtid:0-1-100 (MariaDB) or gtid:UUID:1-100 (MySQL)".into())
    );
    match StartPosition::parse("binlog.000002:120+3") {
        Ok(StartPosition::At(p)) => assert_eq!((p.offset, p.row), (120, 3)),
        other => panic!("{other:?}"),
    }
}

#[test]
fn env_overrides_every_kind_of_key() {
    let c = parse_env(
        MINIMAL,
        &[
            ("BINLOG_BRIDGE_MYSQL_SERVER_ID", "77"),
            ("BINLOG_BRIDGE_ETCD_ENDPOINTS", "[\"10.0.0.1:2379\"]"),
            ("BINLOG_BRIDGE_ETCD_LEASE_TTL_SECS", "1"),
            ("BINLOG_BRIDGE_KAFKA_FORMAT", "canal"),
            ("BINLOG_BRIDGE_KAFKA_TOPIC", "cdc.{db}"),
            ("BINLOG_BRIDGE_KAFKA_PROPERTIES__COMPRESSION_TYPE", "zstd"),
            ("BINLOG_BRIDGE_HTTP_LISTEN", "127.0.0.1:9999"),
            ("OTHER_VAR", "ignored"),
            // The --config flag's variable is not an override.
            ("BINLOG_BRIDGE_CONFIG", "/etc/bb.toml"),
        ],
    )
    .unwrap();
    c.validate().unwrap();
    assert_eq!(c.mysql.server_id, 77);
    assert_eq!(c.etcd.endpoints, ["10.0.0.1:2379"]);
    assert_eq!(c.etcd.lease_ttl_secs, 1);
    assert_eq!(c.kafka.format, Format::Canal);
    assert_eq!(c.kafka.topic, "cdc.{db}");
    assert_eq!(c.kafka.properties["compression.type"], "zstd");
    assert_eq!(c.http.listen, "127.0.0.1:9999");
}

#[test]
fn env_can_supply_required_keys() {
    let c = parse_env(
        "",
        &[
            ("BINLOG_BRIDGE_MYSQL_URL", "mysql://u@h:3306"),
            ("BINLOG_BRIDGE_MYSQL_SERVER_ID", "9"),
        ],
    )
    .unwrap();
    c.validate().unwrap();
    assert_eq!(c.mysql.url, "mysql://u@h:3306");
}

#[test]
fn env_typo_is_refused_by_name() {
    let e = parse_env(MINIMAL, &[("BINLOG_BRIDGE_KAFKA_TPOIC", "x")])
        .unwrap_err()
        .to_string();
    assert!(e.contains("unknown field `tpoic`"), "{e}");
    assert!(e.contains("BINLOG_BRIDGE_KAFKA_TPOIC"), "{e}");

    let e = parse_env(MINIMAL, &[("BINLOG_BRIDGE_KAFAK_TOPIC", "x")])
        .unwrap_err()
        .to_string();
    assert_eq!(
        e,
        "environment variable BINLOG_BRIDGE_KAFAK_TOPIC: unknown section `kafak`; sections are mysql, etcd, kafka, http, snapshot"
    );
}

#[test]
fn secrets_never_print() {
    let text = "[mysql]\nurl = \"mysql://u@h:1\"\nserver_id = 1\npassword = \"hunter2\"\n";
    let c = parse(text).unwrap();
    assert_eq!(
        c.mysql.password.as_ref().map(Secret::expose),
        Some("hunter2")
    );
    let dbg = format!("{c:?}");
    assert!(!dbg.contains("hunter2"), "{dbg}");
    let json = serde_json::to_string(&c).unwrap();
    assert!(!json.contains("hunter2"), "{json}");
    assert_eq!(redact_url("mysql://u:hunter2@h:1/"), "mysql://u:***@h:1/");
}

#[test]
fn secret_file_is_read() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("pw");
    std::fs::write(&p, "s3cret\n").unwrap();
    let got = resolve_secret("mysql.password", &None, &Some(p)).unwrap();
    assert_eq!(got.unwrap().expose(), "s3cret");
    let e = resolve_secret("mysql.password", &None, &Some("/nonexistent/pw".into())).unwrap_err();
    assert!(e.starts_with("mysql.password_file /nonexistent/pw:"), "{e}");
}

#[test]
fn kafka_sink_keys_have_throughput_defaults() {
    let c = parse(MINIMAL).unwrap();
    assert_eq!(c.kafka.compression, Compression::Lz4);
    assert_eq!(c.kafka.compression.as_str(), "lz4");
    assert_eq!(c.kafka.linger_ms, 5);
    assert_eq!(c.kafka.batch_bytes, 1_000_000);
    assert_eq!(c.kafka.max_in_flight, 100_000);
    assert_eq!(c.kafka.max_in_flight_bytes, 16 * 1024 * 1024);
    assert_eq!(c.kafka.keyless, Keyless::Table);
    assert!(c.kafka.create_topics);
    assert!(!c.kafka.debezium_schema);
    let c = parse(&format!(
        "{MINIMAL}\n[kafka]\ncompression = \"zstd\"\nkeyless = \"none\"\ncreate_topics = false\n"
    ))
    .unwrap();
    c.validate().unwrap();
    assert_eq!(c.kafka.compression, Compression::Zstd);
    assert_eq!(c.kafka.keyless, Keyless::None);
    assert!(!c.kafka.create_topics);
}

#[test]
fn kafka_sink_keys_out_of_range_are_refused_with_the_range() {
    let text = format!(
        "{MINIMAL}\n[kafka]\nformat = \"canal\"\nlinger_ms = 400000\nbatch_bytes = 0\nmax_in_flight = 0\nmax_in_flight_bytes = 100\ndebezium_schema = true\n"
    );
    assert_eq!(
        invalid(&text),
        [
            "kafka.linger_ms = 400000 is out of range; use 0 to 300000 (default 5)",
            "kafka.batch_bytes = 0 is out of range; use 1 to 2147483647 (default 1000000)",
            "kafka.max_in_flight = 0 is out of range; use 1 to 1000000 (default 100000)",
            "kafka.max_in_flight_bytes = 100 is out of range; use 1024 to 1073741824 (default 16777216 = 16 MiB)",
            "kafka.debezium_schema = true only applies to format = \"debezium\", not Canal; remove it",
        ]
    );
    let e = parse(&format!("{MINIMAL}\n[kafka]\ncompression = \"brotli\"\n"))
        .unwrap_err()
        .to_string();
    assert!(e.contains("compression") && e.contains("lz4"), "{e}");
}

#[test]
fn schema_topic_equal_to_row_topic_is_refused() {
    let text = format!("{MINIMAL}\n[kafka]\ntopic = \"cdc\"\nschema_topic = \"cdc\"\n");
    assert_eq!(
        invalid(&text),
        ["kafka.schema_topic = \"cdc\" is the same as kafka.topic; schema changes must not be mixed into row topics (Flink's readers fail on them), e.g. \"{pipeline}.schema-changes\""]
    );
}

#[test]
fn snapshot_keys_default_to_never_and_are_checked() {
    let base = "[mysql]\nurl = \"mysql://u@h:1\"\nserver_id = 1\n";
    let c = parse(base).expect("parses");
    assert_eq!(c.snapshot.mode, crate::config::SnapshotMode::Never);
    assert_eq!(c.snapshot.chunk_rows, 1024);
    let c = parse_env(base, &[("BINLOG_BRIDGE_SNAPSHOT_MODE", "initial")]).expect("parses");
    assert_eq!(c.snapshot.mode, crate::config::SnapshotMode::Initial);
    let e = parse(&format!("{base}[snapshot]\nmode = \"always\"\n")).unwrap_err();
    assert!(e.to_string().contains("snapshot.mode"), "{e}");
    let v = invalid(&format!("{base}[snapshot]\nchunk_rows = 0\n"));
    assert!(
        v.iter().any(|m| m.contains("snapshot.chunk_rows = 0")),
        "{v:?}"
    );
}

#[test]
fn when_needed_parses_and_the_purge_confirmation_needs_it() {
    let base = "[mysql]\nurl = \"mysql://u@h:1\"\nserver_id = 1\n";
    let c = parse(&format!(
        "{base}[snapshot]\nmode = \"when-needed\"\nallow_resnapshot_on_purge = true\n"
    ))
    .expect("parses");
    assert_eq!(c.snapshot.mode, crate::config::SnapshotMode::WhenNeeded);
    assert!(c.snapshot.allow_resnapshot_on_purge);
    assert!(c.snapshot.mode.initial());
    let c = parse(base).expect("parses");
    assert!(!c.snapshot.allow_resnapshot_on_purge);
    let v = invalid(&format!(
        "{base}[snapshot]\nmode = \"initial\"\nallow_resnapshot_on_purge = true\n"
    ));
    assert_eq!(
        v,
        ["snapshot.allow_resnapshot_on_purge = true only applies with snapshot.mode = \"when-needed\" (it is \"initial\"); set the mode or remove the key"]
    );
}

#[test]
fn mysql_tls_keys_parse_and_bad_combinations_are_named() {
    let text = format!("{MINIMAL}tls = \"verify-identity\"\ntls_ca_file = \"Cargo.toml\"\n");
    let c = parse(&text).unwrap();
    c.validate().unwrap();
    assert_eq!(c.mysql.tls, MysqlTls::VerifyIdentity);
    let tls = c.mysql.ssl_opts().expect("TLS on");
    assert!(!tls.skip_domain_validation() && !tls.accept_invalid_certs());
    assert!(tls.disable_built_in_roots(), "only the given CA is trusted");
    assert!(
        parse(MINIMAL).unwrap().mysql.ssl_opts().is_none(),
        "default: disabled"
    );
    let c = parse(&format!("{MINIMAL}tls = \"required\"\n")).unwrap();
    assert!(c.mysql.ssl_opts().unwrap().accept_invalid_certs());

    let e = parse(&format!("{MINIMAL}tls = \"on\"\n"))
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("mysql.tls") && e.contains("verify-identity"),
        "{e}"
    );
    let errs = invalid(&format!(
        "{MINIMAL}tls = \"required\"\ntls_ca_file = \"Cargo.toml\"\ntls_cert_file = \"/nonexistent/c.pem\"\n"
    ));
    let all = errs.join("\n");
    assert!(
        all.contains("mysql.tls_ca_file is set but mysql.tls = \"required\""),
        "{all}"
    );
    assert!(
        all.contains("mysql.tls_cert_file and mysql.tls_key_file go together"),
        "{all}"
    );
    assert!(
        all.contains("mysql.tls_cert_file = \"/nonexistent/c.pem\" cannot be read"),
        "{all}"
    );
}

#[test]
fn kafka_security_keys_map_to_librdkafka_and_bad_combinations_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let pw = dir.path().join("pw");
    std::fs::write(&pw, "s3cr3t-Kafka\n").unwrap();
    let text = format!(
        "{MINIMAL}[kafka]\nsecurity_protocol = \"sasl_ssl\"\nsasl_mechanism = \"SCRAM-SHA-512\"\nsasl_username = \"bridge\"\nsasl_password_file = {:?}\nssl_ca_file = \"Cargo.toml\"\n[kafka.properties]\n\"client.id\" = \"bb\"\n",
        pw.display().to_string()
    );
    let c = parse(&text).unwrap();
    c.validate().unwrap();
    let p = c.kafka.client_properties().unwrap();
    assert_eq!(p["security.protocol"], "sasl_ssl");
    assert_eq!(p["sasl.mechanism"], "SCRAM-SHA-512");
    assert_eq!(p["sasl.username"], "bridge");
    assert_eq!(p["sasl.password"], "s3cr3t-Kafka");
    assert_eq!(p["ssl.ca.location"], "Cargo.toml");
    assert_eq!(p["client.id"], "bb");
    // The config itself never shows the password.
    assert!(!format!("{c:?}").contains("s3cr3t"));
    assert!(!toml::to_string(&c).unwrap().contains("s3cr3t"));
    // Plaintext: no security property at all.
    let p = parse(MINIMAL).unwrap().kafka.client_properties().unwrap();
    assert!(p.is_empty(), "{p:?}");
    // From the environment, inline.
    let c = parse_env(
        &format!("{MINIMAL}[kafka]\nsecurity_protocol = \"sasl_plaintext\"\nsasl_mechanism = \"PLAIN\"\nsasl_username = \"u\"\n"),
        &[("BINLOG_BRIDGE_KAFKA_SASL_PASSWORD", "envpw")],
    )
    .unwrap();
    c.validate().unwrap();
    assert_eq!(
        c.kafka.client_properties().unwrap()["sasl.password"],
        "envpw"
    );
    // A missing password file names the key, not a password.
    let mut k = c.kafka.clone();
    k.sasl_password = None;
    k.sasl_password_file = Some("/nonexistent/pw".into());
    let e = k.client_properties().unwrap_err();
    assert!(
        e.contains("kafka.sasl_password_file /nonexistent/pw"),
        "{e}"
    );

    let all = invalid(&format!(
        "{MINIMAL}[kafka]\nsecurity_protocol = \"sasl_ssl\"\nssl_cert_file = \"Cargo.toml\"\n[kafka.properties]\n\"sasl.password\" = \"x\"\n\"security.protocol\" = \"ssl\"\n"
    ))
    .join("\n");
    for want in [
        "kafka.security_protocol = \"sasl_ssl\" needs kafka.sasl_mechanism",
        "needs kafka.sasl_username",
        "needs kafka.sasl_password_file",
        "kafka.ssl_cert_file and kafka.ssl_key_file go together",
        "kafka.properties.\"sasl.password\" would keep a secret in plain config",
        "kafka.properties.\"security.protocol\" is set by kafka.security_protocol",
    ] {
        assert!(all.contains(want), "missing {want:?} in:\n{all}");
    }
    let all = invalid(&format!(
        "{MINIMAL}[kafka]\nsasl_mechanism = \"PLAIN\"\nsasl_username = \"u\"\nssl_ca_file = \"Cargo.toml\"\n"
    ))
    .join("\n");
    assert!(
        all.contains("kafka.sasl_* keys are set but kafka.security_protocol = \"plaintext\""),
        "{all}"
    );
    assert!(
        all.contains("kafka.ssl_* files are set but kafka.security_protocol = \"plaintext\""),
        "{all}"
    );
    let e = parse(&format!("{MINIMAL}[kafka]\nsasl_mechanism = \"GSSAPI\"\n"))
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("kafka.sasl_mechanism") && e.contains("SCRAM-SHA-256"),
        "{e}"
    );
}

#[test]
fn exclude_columns_must_be_db_table_column() {
    let c = parse(&format!("{MINIMAL}exclude_columns = [\"shop.*.ssn\"]\n")).unwrap();
    c.validate().unwrap();
    let all = invalid(&format!(
        "{MINIMAL}exclude_columns = [\"shop.ssn\", \"a..b\"]\n"
    ))
    .join("\n");
    assert!(
        all.contains("mysql.exclude_columns entry \"shop.ssn\" is not DB.TABLE.COLUMN"),
        "{all}"
    );
    assert!(all.contains("\"a..b\""), "{all}");
}

#[test]
fn an_excluded_key_column_is_refused() {
    let all = invalid(&format!(
        "{MINIMAL}exclude_columns = [\"shop.*.email\"]\n[kafka.key_columns]\n\"shop.users\" = [\"email\"]\n"
    ))
    .join("\n");
    assert!(
        all.contains("\"shop.*.email\" excludes `email`, a kafka.key_columns column of shop.users"),
        "{all}"
    );
}

#[test]
fn a_numeric_password_from_the_environment_stays_a_hidden_string() {
    let text = format!(
        "{MINIMAL}[kafka]\nsecurity_protocol = \"sasl_ssl\"\nsasl_mechanism = \"PLAIN\"\nsasl_username = \"u\"\n"
    );
    let c = parse_env(
        &text,
        &[
            ("BINLOG_BRIDGE_MYSQL_PASSWORD", "902113"),
            ("BINLOG_BRIDGE_KAFKA_SASL_PASSWORD", "[1, 2]"),
        ],
    )
    .unwrap();
    c.validate().unwrap();
    assert_eq!(c.mysql.password.as_ref().unwrap().expose(), "902113");
    assert_eq!(
        c.kafka.client_properties().unwrap()["sasl.password"],
        "[1, 2]"
    );
    assert!(!format!("{c:?}").contains("902113"));
}

#[test]
fn a_mistyped_password_in_the_file_is_refused_without_showing_it() {
    let e = parse("[mysql]\nurl = \"mysql://u@h:1\"\nserver_id = 1\npassword = 902113\n")
        .unwrap_err()
        .to_string();
    assert!(e.contains("mysql.password"), "{e}");
    assert!(e.contains("quoted string"), "{e}");
    assert!(!e.contains("902113"), "{e}");
}

#[test]
fn a_parse_error_on_a_password_line_does_not_quote_the_password() {
    let e =
        parse("[mysql]\nurl = \"mysql://u@h:1\"\nserver_id = 1\npassword = \"s3cr3t-unclosed\n")
            .unwrap_err()
            .to_string();
    assert!(e.contains("line 4"), "{e}");
    assert!(e.contains("password = *** (hidden)"), "{e}");
    assert!(!e.contains("s3cr3t"), "{e}");
}

#[test]
fn transactional_keys_have_defaults_and_bad_values_are_refused() {
    let c = parse(MINIMAL).unwrap();
    assert_eq!(c.kafka.progress_topic, "{pipeline}.progress");
    assert_eq!(c.kafka.transaction_max_messages, 10_000);
    assert_eq!(c.kafka.transaction_max_bytes, 8_000_000);
    assert_eq!(c.kafka.transaction_max_ms, 200);
    assert_eq!(
        c.kafka.transactional_id_for("orders"),
        "binlog-bridge.orders"
    );
    let c = parse(&format!(
        "{MINIMAL}\n[kafka]\ndelivery = \"transactional\"\ntransactional_id = \"shop-cdc\"\n"
    ))
    .unwrap();
    c.validate().unwrap();
    assert_eq!(c.kafka.transactional_id_for("orders"), "shop-cdc");
    let text = format!(
        "{MINIMAL}\n[kafka]\nprogress_topic = \"{{db}}.p\"\ntransactional_id = \" \"\ntransaction_max_messages = 0\ntransaction_max_bytes = 0\ntransaction_max_ms = 60000\n"
    );
    assert_eq!(
        invalid(&text),
        [
            "kafka.progress_topic = \"{db}.p\" may only use {pipeline}, e.g. \"{pipeline}.progress\"",
            "kafka.transactional_id = \" \" is empty or has control characters; remove it (default binlog-bridge.{pipeline}) or give a name",
            "kafka.transaction_max_messages = 0 is out of range; use 1 to 10000000 (default 10000)",
            "kafka.transaction_max_bytes = 0 is out of range; use 1 to 1000000000 (default 8000000)",
            "kafka.transaction_max_ms = 60000 is out of range; use 1 to 30000 (default 200; the broker aborts transactions older than transaction.timeout.ms)",
        ]
    );
    let text = format!("{MINIMAL}\n[kafka]\nschema_topic = \"x\"\nprogress_topic = \"x\"\n");
    assert_eq!(
        invalid(&text),
        ["kafka.progress_topic = \"x\" is also a data topic; give it a name of its own, e.g. \"{pipeline}.progress\""]
    );
}
