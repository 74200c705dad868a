//! The binlog dump read straight off the socket, for plain-TCP connections.
//!
//! mysql_async's `BinlogStream` parses every event it reads (an owned copy
//! of the event, a clone of the format description, each table map parsed
//! and stored) and [`super::connection::raw_event`] then rebuilds the
//! event's bytes for our decoder, which parses them again. Over a whole
//! binlog that costs 1.4-1.7x our decoder's own CPU (`examples/decode_bench.rs`,
//! README "Performance"). This reader speaks the protocol itself
//! (handshake, `mysql_native_password` / `caching_sha2_password` fast
//! authentication, `SET`s, `COM_REGISTER_SLAVE`, `COM_BINLOG_DUMP`, packets
//! read into one buffer) and hands the decoder each event's bytes as the
//! server sent them, without a copy (an event over 16 MiB, sent as several
//! packets, is joined into a second buffer).
//!
//! It covers what it can do exactly; anything else is [`Start::Unsupported`]
//! and the caller uses mysql_async's stream instead: TLS (`mysql.tls` other
//! than `disabled`), a Unix socket path in the URL, the compressed protocol,
//! and authentication other than the two plugins above (e.g. the full
//! `caching_sha2_password` exchange, which needs TLS or the server's RSA
//! key). So does any failure before the dump is asked for (the connection,
//! the login, the `SET`s, the registration: [`Start::Failed`]): mysql_async,
//! which has just logged in with the same settings, then either works or
//! reports the error as it always did. Once the dump is asked for, the
//! server's errors (a purged file, ...) come in the stream, as with
//! mysql_async. The packet building and parsing come from mysql_common, the
//! library mysql_async itself uses.

use bytes::{Buf, BytesMut};
use mysql_common::constants::CapabilityFlags;
use mysql_common::io::ParseBuf;
use mysql_common::packets::binlog_request::BinlogRequest;
use mysql_common::packets::{
    AuthPlugin, AuthSwitchRequest, ComRegisterSlave, HandshakePacket, HandshakeResponse,
};
use mysql_common::proto::MySerialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::connection::ReadError;
use super::error::{classify_server_error, SourceError};

/// A packet's largest payload; a longer one continues in the next packet.
const MAX_PAYLOAD: usize = 0xFF_FFFF;
/// Bytes asked of the socket per read (at least).
const READ_CHUNK: usize = 256 * 1024;

/// Why the dump did not start here.
#[derive(Debug)]
pub enum Start {
    /// This reader cannot do what the connection needs (the reason): use
    /// mysql_async's stream.
    Unsupported(String),
    /// The server or the network refused before the dump was asked for.
    Failed(SourceError),
}

impl From<SourceError> for Start {
    fn from(e: SourceError) -> Self {
        Start::Failed(e)
    }
}

/// Whether `opts` are a plain-TCP connection this reader can open, or why not.
fn unsupported(opts: &mysql_async::Opts) -> Option<String> {
    if opts.ssl_opts().is_some() {
        return Some("TLS is configured (mysql.tls)".into());
    }
    if opts.socket().is_some() {
        return Some("the URL names a Unix socket".into());
    }
    if opts.compression().is_some() {
        return Some("the URL asks for the compressed protocol".into());
    }
    None
}

/// Where the current event's bytes are.
#[derive(Debug, Clone, Copy)]
enum Ready {
    None,
    /// `buf[start..end]`.
    Buf(usize, usize),
    /// `big`.
    Big,
}

/// A binlog dump read off the socket: [`RawDump::read_event`], then
/// [`RawDump::event`].
pub struct RawDump {
    io: TcpStream,
    buf: BytesMut,
    /// Bytes at the front of `buf` that the last packet occupies; dropped
    /// when the next one is read (so the last event's bytes stay valid).
    consumed: usize,
    /// An event over [`MAX_PAYLOAD`], joined from its packets.
    big: Vec<u8>,
    /// `big` is being joined: the next packets continue it.
    joining: bool,
    ready: Ready,
    /// The sequence number the next packet written carries.
    seq: u8,
    /// `file:offset` or `gtid:...`, for errors.
    what: String,
}

fn io_error(e: std::io::Error, doing: &str) -> SourceError {
    SourceError::Transient(format!("MySQL connection ({doing}): {e}"))
}

/// An ERR packet's code and message (`p` starts with 0xff).
fn server_error(p: &[u8]) -> (u16, String) {
    let code = match p.get(1..3) {
        Some(c) => u16::from_le_bytes([c[0], c[1]]),
        None => 0,
    };
    let msg = match p.get(3) {
        // '#' and a 5-character SQL state before the message.
        Some(b'#') => p.get(9..).unwrap_or_default(),
        _ => p.get(3..).unwrap_or_default(),
    };
    (code, String::from_utf8_lossy(msg).into_owned())
}

impl RawDump {
    /// Connect over TCP, log in, send `setup` (each a `SET`), register as a
    /// replica and ask for the binlog with `request`.
    pub async fn start(
        opts: &mysql_async::Opts,
        setup: &[String],
        server_id: u32,
        request: BinlogRequest<'_>,
        what: &str,
    ) -> Result<RawDump, Start> {
        if let Some(why) = unsupported(opts) {
            return Err(Start::Unsupported(why));
        }
        let io = TcpStream::connect((opts.ip_or_hostname(), opts.tcp_port()))
            .await
            .map_err(|e| io_error(e, "connect"))?;
        // Commands are small and answered one at a time.
        io.set_nodelay(true).map_err(|e| io_error(e, "connect"))?;
        let mut d = RawDump {
            io,
            buf: BytesMut::with_capacity(READ_CHUNK),
            consumed: 0,
            big: Vec::new(),
            joining: false,
            ready: Ready::None,
            seq: 0,
            what: what.to_string(),
        };
        d.login(opts).await?;
        for q in setup {
            d.query(q).await?;
        }
        // As mysql_async does before registering: events with their checksums.
        d.query("SET @master_binlog_checksum = 'ALL'").await?;
        let mut cmd = Vec::new();
        ComRegisterSlave::new(server_id).serialize(&mut cmd);
        d.command(&cmd, "COM_REGISTER_SLAVE").await?;
        cmd.clear();
        request.as_cmd().serialize(&mut cmd);
        d.seq = 0;
        d.write_packet(&cmd)
            .await
            .map_err(|e| io_error(e, "COM_BINLOG_DUMP"))?;
        Ok(d)
    }

    async fn login(&mut self, opts: &mysql_async::Opts) -> Result<(), Start> {
        let hello = self.packet_vec("handshake").await?;
        if hello.first() == Some(&0xff) {
            let (code, msg) = server_error(&hello);
            return Err(Start::Failed(classify_server_error(code, &msg, "connect")));
        }
        let hs = ParseBuf(&hello)
            .parse::<HandshakePacket>(())
            .map_err(|e| Start::Unsupported(format!("handshake not understood: {e}")))?;
        let mut nonce = hs.scramble_1_ref().to_vec();
        nonce.extend_from_slice(hs.scramble_2_ref().unwrap_or_default());
        // 20 bytes and a terminating zero, as the server counts it.
        nonce.resize(20, 0);
        let mut want = CapabilityFlags::CLIENT_PROTOCOL_41
            | CapabilityFlags::CLIENT_SECURE_CONNECTION
            | CapabilityFlags::CLIENT_LONG_PASSWORD
            | CapabilityFlags::CLIENT_TRANSACTIONS
            | CapabilityFlags::CLIENT_MULTI_RESULTS
            | CapabilityFlags::CLIENT_PLUGIN_AUTH;
        if opts.db_name().is_some() {
            want |= CapabilityFlags::CLIENT_CONNECT_WITH_DB;
        }
        let caps = hs.capabilities() & want;
        if !caps.contains(CapabilityFlags::CLIENT_PROTOCOL_41 | CapabilityFlags::CLIENT_PLUGIN_AUTH)
        {
            return Err(Start::Unsupported(
                "the server does not offer protocol 4.1 with authentication plugins".into(),
            ));
        }
        let version = hs
            .maria_db_server_version_parsed()
            .or_else(|| hs.server_version_parsed())
            .unwrap_or((0, 0, 0));
        let mut plugin = match hs.auth_plugin() {
            Some(AuthPlugin::CachingSha2Password) => AuthPlugin::CachingSha2Password,
            _ => AuthPlugin::MysqlNativePassword,
        };
        let pass = opts.pass();
        let data = plugin.gen_data(pass, &nonce);
        let response = HandshakeResponse::new(
            data.as_deref(),
            version,
            opts.user().map(str::as_bytes),
            opts.db_name().map(str::as_bytes),
            Some(plugin.borrow()),
            caps,
            None,
            MAX_PAYLOAD as u32,
        );
        let mut out = Vec::new();
        response.serialize(&mut out);
        self.write_packet(&out)
            .await
            .map_err(|e| io_error(e, "login"))?;
        let mut switched = false;
        loop {
            let p = self.packet_vec("login").await?;
            match p.first() {
                Some(0x00) => return Ok(()),
                Some(0xff) => {
                    let (code, msg) = server_error(&p);
                    return Err(Start::Failed(classify_server_error(code, &msg, "connect")));
                }
                Some(0xfe) if !switched && p.len() > 1 => {
                    switched = true;
                    let sw = ParseBuf(&p).parse::<AuthSwitchRequest>(()).map_err(|e| {
                        Start::Unsupported(format!("auth switch not understood: {e}"))
                    })?;
                    plugin = match sw.auth_plugin() {
                        AuthPlugin::CachingSha2Password => AuthPlugin::CachingSha2Password,
                        AuthPlugin::MysqlNativePassword => AuthPlugin::MysqlNativePassword,
                        other => {
                            return Err(Start::Unsupported(format!(
                                "authentication plugin {}",
                                String::from_utf8_lossy(other.as_bytes())
                            )))
                        }
                    };
                    let nonce = sw.plugin_data().to_vec();
                    let data = plugin.gen_data(pass, &nonce);
                    self.write_packet(data.as_deref().unwrap_or_default())
                        .await
                        .map_err(|e| io_error(e, "login"))?;
                }
                // caching_sha2_password: 3 is "fast authentication done", an
                // OK follows; 4 asks for the password in the clear (TLS) or
                // RSA-encrypted, which this reader leaves to mysql_async.
                Some(0x01) if plugin == AuthPlugin::CachingSha2Password => match p.get(1) {
                    Some(0x03) => {}
                    _ => {
                        return Err(Start::Unsupported(
                            "caching_sha2_password full authentication".into(),
                        ))
                    }
                },
                _ => {
                    return Err(Start::Unsupported(format!(
                        "unexpected login packet (first byte {:?})",
                        p.first()
                    )))
                }
            }
        }
    }

    /// A `COM_QUERY` whose answer is an OK packet.
    async fn query(&mut self, sql: &str) -> Result<(), Start> {
        let mut cmd = Vec::with_capacity(1 + sql.len());
        cmd.push(0x03);
        cmd.extend_from_slice(sql.as_bytes());
        self.command(&cmd, sql).await
    }

    /// Send a command and read its OK (an ERR becomes the server's error).
    async fn command(&mut self, cmd: &[u8], what: &str) -> Result<(), Start> {
        self.seq = 0;
        self.write_packet(cmd)
            .await
            .map_err(|e| io_error(e, what))?;
        let p = self.packet_vec(what).await?;
        match p.first() {
            Some(0x00) => Ok(()),
            Some(0xff) => {
                let (code, msg) = server_error(&p);
                Err(Start::Failed(classify_server_error(code, &msg, what)))
            }
            _ => Err(Start::Unsupported(format!(
                "unexpected answer to {what} (first byte {:?})",
                p.first()
            ))),
        }
    }

    /// One packet (every command this reader sends is far under 16 MiB).
    async fn write_packet(&mut self, payload: &[u8]) -> std::io::Result<()> {
        if payload.len() >= MAX_PAYLOAD {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                format!("a {}-byte command does not fit one packet", payload.len()),
            ));
        }
        let mut out = Vec::with_capacity(payload.len() + 4);
        out.extend_from_slice(&(payload.len() as u32).to_le_bytes()[..3]);
        out.push(self.seq);
        self.seq = self.seq.wrapping_add(1);
        out.extend_from_slice(payload);
        self.io.write_all(&out).await
    }

    /// The next packet's payload as `buf[start..end]`. Cancel-safe: a
    /// partly read packet stays in `buf`.
    async fn packet(&mut self) -> std::io::Result<(usize, usize)> {
        if self.consumed > 0 {
            self.buf.advance(self.consumed);
            self.consumed = 0;
            self.ready = Ready::None;
        }
        loop {
            let have = self.buf.len();
            if have >= 4 {
                let len = u32::from_le_bytes([self.buf[0], self.buf[1], self.buf[2], 0]) as usize;
                if have >= 4 + len {
                    self.seq = self.buf[3].wrapping_add(1);
                    self.consumed = 4 + len;
                    return Ok((4, 4 + len));
                }
                self.buf.reserve(4 + len - have);
            }
            if self.buf.capacity() - self.buf.len() < READ_CHUNK / 4 {
                self.buf.reserve(READ_CHUNK);
            }
            if self.io.read_buf(&mut self.buf).await? == 0 {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    "the server closed the connection",
                ));
            }
        }
    }

    /// The next packet copied out (the login and command answers).
    async fn packet_vec(&mut self, doing: &str) -> Result<Vec<u8>, SourceError> {
        let (s, e) = self.packet().await.map_err(|e| io_error(e, doing))?;
        Ok(self.buf[s..e].to_vec())
    }

    /// Read the next event of the dump (then [`RawDump::event`]).
    ///
    /// Cancel-safe. [`ReadError::Malformed`] is a definite error: reading
    /// again would meet the same packet.
    pub async fn read_event(&mut self) -> Result<(), ReadError> {
        loop {
            let (s, e) = self
                .packet()
                .await
                .map_err(|e| ReadError::Source(io_error(e, &self.what)))?;
            let len = e - s;
            if self.joining {
                self.big.extend_from_slice(&self.buf[s..e]);
                if len < MAX_PAYLOAD {
                    self.joining = false;
                    self.ready = Ready::Big;
                    return Ok(());
                }
                continue;
            }
            match self.buf[s..e].first() {
                Some(0x00) if len == MAX_PAYLOAD => {
                    self.big.clear();
                    self.big.extend_from_slice(&self.buf[s + 1..e]);
                    self.joining = true;
                }
                Some(0x00) => {
                    self.ready = Ready::Buf(s + 1, e);
                    return Ok(());
                }
                Some(0xff) => {
                    let (code, msg) = server_error(&self.buf[s..e]);
                    return Err(ReadError::Source(classify_server_error(
                        code, &msg, &self.what,
                    )));
                }
                Some(0xfe) if len < 8 => {
                    return Err(ReadError::Source(SourceError::Transient(
                        "the server closed the binlog stream".into(),
                    )))
                }
                first => {
                    return Err(ReadError::Malformed(format!(
                        "a binlog stream packet of {len} bytes starts with {first:?}, not 0x00 (event), 0xff (error) or 0xfe (end)"
                    )))
                }
            }
        }
    }

    /// The bytes of the event [`RawDump::read_event`] read (empty before one).
    pub fn event(&self) -> &[u8] {
        match self.ready {
            Ready::None => &[],
            Ready::Buf(s, e) => &self.buf[s..e],
            Ready::Big => &self.big,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Packets as a server frames them: `(sequence, payload)` split at
    /// [`MAX_PAYLOAD`], an empty packet after an exact multiple.
    fn frame(payload: &[u8], seq: &mut u8, out: &mut Vec<u8>) {
        let mut rest = payload;
        loop {
            let n = rest.len().min(MAX_PAYLOAD);
            out.extend_from_slice(&(n as u32).to_le_bytes()[..3]);
            out.push(*seq);
            *seq = seq.wrapping_add(1);
            out.extend_from_slice(&rest[..n]);
            rest = &rest[n..];
            if n < MAX_PAYLOAD {
                break;
            }
        }
    }

    /// A `RawDump` reading what a local socket sends: `wire`, written in
    /// small pieces so packets arrive split across reads.
    async fn reading(wire: Vec<u8>) -> RawDump {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.expect("accept");
            for piece in wire.chunks(1_000_003) {
                if s.write_all(piece).await.is_err() {
                    return;
                }
            }
        });
        RawDump {
            io: TcpStream::connect(addr).await.expect("connect"),
            buf: BytesMut::new(),
            consumed: 0,
            big: Vec::new(),
            joining: false,
            ready: Ready::None,
            seq: 0,
            what: "binlog.000001:4".into(),
        }
    }

    #[tokio::test]
    async fn events_of_every_size_come_whole_then_the_servers_error() {
        // 0x00 + event: under one packet, exactly one packet's payload (an
        // empty packet follows), and two packets and a bit.
        let sizes = [40, MAX_PAYLOAD - 1, 2 * MAX_PAYLOAD + 17, 7];
        let mut wire = Vec::new();
        let mut seq = 1;
        let mut events = Vec::new();
        for (i, n) in sizes.iter().enumerate() {
            let ev: Vec<u8> = (0..*n).map(|j| (i * 31 + j) as u8).collect();
            let mut payload = vec![0u8];
            payload.extend_from_slice(&ev);
            frame(&payload, &mut seq, &mut wire);
            events.push(ev);
        }
        let mut err = vec![0xff, 0xd4, 0x04, b'#'];
        err.extend_from_slice(b"HY000Could not find first log file name in binary log index file");
        frame(&err, &mut seq, &mut wire);
        let mut d = reading(wire).await;
        for ev in &events {
            d.read_event().await.expect("an event");
            assert_eq!(d.event().len(), ev.len());
            assert!(
                d.event() == &ev[..],
                "the bytes of a {}-byte event",
                ev.len()
            );
        }
        match d.read_event().await {
            Err(ReadError::Source(SourceError::Purged { what, .. })) => {
                assert_eq!(what, "binlog.000001:4")
            }
            other => panic!("expected the purged-file error, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn end_of_stream_and_a_stray_packet_are_told_apart() {
        let mut wire = Vec::new();
        let mut seq = 1;
        frame(&[0xfe, 0, 0, 2, 0], &mut seq, &mut wire);
        let mut d = reading(wire).await;
        assert!(matches!(
            d.read_event().await,
            Err(ReadError::Source(SourceError::Transient(_)))
        ));

        let mut wire = Vec::new();
        frame(&[0x07, 1, 2, 3], &mut seq, &mut wire);
        let mut d = reading(wire).await;
        match d.read_event().await {
            Err(ReadError::Malformed(what)) => {
                assert!(what.contains("starts with Some(7)"), "{what}")
            }
            other => panic!("expected a malformed packet, got {other:?}"),
        }
        // A connection closed mid-packet is transient (reconnect and resume).
        let mut d = reading(vec![9, 0, 0, 1, 0, 1]).await;
        assert!(matches!(
            d.read_event().await,
            Err(ReadError::Source(SourceError::Transient(_)))
        ));
    }

    #[test]
    fn an_err_packet_gives_its_code_and_message() {
        let mut p = vec![0xff, 0xd4, 0x04, b'#'];
        p.extend_from_slice(b"HY000");
        p.extend_from_slice(b"Could not find first log file name in binary log index file");
        let (code, msg) = server_error(&p);
        assert_eq!(code, 1236);
        assert_eq!(
            msg,
            "Could not find first log file name in binary log index file"
        );
        // Without the SQL state (before the handshake).
        let (code, msg) = server_error(&[0xff, 0x10, 0x04, b'T', b'o', b'o']);
        assert_eq!((code, msg.as_str()), (1040, "Too"));
        assert_eq!(server_error(&[0xff]).0, 0);
    }
}
