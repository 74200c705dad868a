//! A malformed binlog packet on the wire. A proxy between the source and the
//! dev env MariaDB rewrites the first row event of the dump so that its
//! header claims more bytes than the packet holds. Our own dump reader hands
//! the bytes to the decoder, which refuses the event's size; through
//! mysql_async (`mysql.dump_reader = "driver"`) the protocol library
//! (mysql_common) panics while parsing it. Either way the source must turn
//! that into a definite decode error naming the position: no crash of the
//! process, no reconnect loop reading the same packet again.

mod common;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use binlog_bridge::config::DumpReader;
use binlog_bridge::source::{SourceError, StartFrom};
use mysql_async::prelude::Queryable;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// One MySQL protocol packet: its 4-byte header and its payload.
async fn read_packet(r: &mut (impl AsyncRead + Unpin)) -> std::io::Result<([u8; 4], Vec<u8>)> {
    let mut h = [0u8; 4];
    r.read_exact(&mut h).await?;
    let len = u32::from_le_bytes([h[0], h[1], h[2], 0]) as usize;
    let mut p = vec![0u8; len];
    r.read_exact(&mut p).await?;
    Ok((h, p))
}

/// Binlog row event type codes: WRITE_ROWS v1 (MariaDB) and v2 (MySQL).
const WRITE_ROWS: [u8; 2] = [23, 30];

/// Forwards one connection, rewriting the first row event after the client
/// asked for the binlog (COM_BINLOG_DUMP, 0x12); counts rewrites in `rewrites`.
async fn pipe(client: TcpStream, server: TcpStream, rewrites: Arc<AtomicUsize>) {
    let (mut cr, mut cw) = client.into_split();
    let (mut sr, mut sw) = server.into_split();
    let dumping = Arc::new(AtomicBool::new(false));
    let seen = dumping.clone();
    let up = tokio::spawn(async move {
        while let Ok((h, p)) = read_packet(&mut cr).await {
            if h[3] == 0 && p.first() == Some(&0x12) {
                seen.store(true, Ordering::SeqCst);
            }
            if sw.write_all(&h).await.is_err() || sw.write_all(&p).await.is_err() {
                break;
            }
        }
    });
    let mut rewritten = false;
    while let Ok((mut h, mut p)) = read_packet(&mut sr).await {
        // An event packet: 0x00, then the 19-byte event header (timestamp 4,
        // type 1, server id 4, event size 4, next position 4, flags 2).
        if !rewritten
            && dumping.load(Ordering::SeqCst)
            && p.len() > 20
            && p[0] == 0
            && WRITE_ROWS.contains(&p[5])
        {
            let mut bad = p[..20].to_vec();
            bad[10..14].copy_from_slice(&4096u32.to_le_bytes());
            bad.extend_from_slice(&[0; 4]);
            p = bad;
            h[..3].copy_from_slice(&(p.len() as u32).to_le_bytes()[..3]);
            rewritten = true;
            rewrites.fetch_add(1, Ordering::SeqCst);
        }
        if cw.write_all(&h).await.is_err() || cw.write_all(&p).await.is_err() {
            break;
        }
    }
    up.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_row_event_shorter_than_its_header_says_is_a_definite_error() {
    malformed_row_event(
        DumpReader::Auto,
        "own",
        "event size field says 4096 bytes, the event has 23",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_packet_that_panics_the_protocol_library_is_a_definite_error() {
    malformed_row_event(
        DumpReader::Driver,
        "mysql_async",
        "the MySQL protocol library panicked on a malformed binlog packet",
    )
    .await;
}

/// Stream through the rewriting proxy with `reader` (which the source must
/// report as `reader_name`); the error must say `says`.
async fn malformed_row_event(reader: DumpReader, reader_name: &str, says: &str) {
    let db = common::unique("src_malformed");
    let mut conn = common::root_with(
        &common::root_url(),
        &format!("CREATE DATABASE {db}; CREATE TABLE {db}.t (id INT PRIMARY KEY, v TEXT)"),
    )
    .await;
    let start = common::master_position(&mut conn).await;
    conn.query_drop(format!("INSERT INTO {db}.t VALUES (1, 'one'), (2, 'two')"))
        .await
        .expect("insert");

    // The bridge user's URL with the proxy's port in place of the server's.
    let url = common::bridge_url();
    let (creds, rest) = url.rsplit_once('@').expect("user@host in BB_MYSQL_URL");
    let upstream = rest.split('/').next().unwrap_or(rest).to_string();
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let rewrites = Arc::new(AtomicUsize::new(0));
    let counted = rewrites.clone();
    let proxy = tokio::spawn(async move {
        while let Ok((client, _)) = listener.accept().await {
            let server = TcpStream::connect(&upstream).await.expect("reach MariaDB");
            tokio::spawn(pipe(client, server, counted.clone()));
        }
    });

    // prefer_socket=false: mysql_async would otherwise move a 127.0.0.1
    // connection to the server's Unix socket, around the proxy.
    let mut cfg = common::mysql_config(
        &format!("{creds}@127.0.0.1:{port}?prefer_socket=false"),
        4231,
        &[&format!("{db}.*")],
    );
    cfg.dump_reader = reader;
    let mut src = common::start_with(&cfg, StartFrom::Position(start.clone())).await;
    assert_eq!(src.dump_reader(), Some(reader_name));
    let err = tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            match src.next_event().await {
                Ok(ev) => assert!(
                    !matches!(ev.kind, binlog_bridge::event::EventKind::Row(_)),
                    "a row came through although its event was corrupted: {ev:?}"
                ),
                Err(e) => break e,
            }
        }
    })
    .await
    .expect("the source must fail, not hang");

    assert_eq!(
        rewrites.load(Ordering::SeqCst),
        1,
        "the proxy rewrote the row event"
    );
    assert!(
        matches!(&err, SourceError::Decode { file, .. } if *file == *start.file),
        "a decode error naming the binlog file: {err:?}"
    );
    assert!(err.to_string().contains(says), "{err}");
    assert!(!err.is_transient(), "definite, not retried: {err}");
    assert_eq!(
        src.reconnects, 0,
        "no reconnect to read the same packet again"
    );
    drop(src);
    proxy.abort();
    conn.query_drop(format!("DROP DATABASE {db}"))
        .await
        .expect("drop");
}
