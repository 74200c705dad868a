//! The events of a binlog file read whole, as `mariadb-binlog` reads one:
//! the 4-byte magic, then events back to back, each starting with the
//! 19-byte common header whose bytes 9..13 hold the event's size.
//!
//! The live stream gets one event per packet and never needs this; the
//! benchmark tools (`examples/bench_tool.rs`, `examples/decode_bench.rs`)
//! feed the [`Decoder`](super::Decoder) from files with it.

use std::fmt;

/// What every binlog file starts with.
pub const MAGIC: [u8; 4] = [0xfe, b'b', b'i', b'n'];

/// Size of the common event header (v4 binlog format).
const HEADER: usize = 19;

/// Why a file's bytes are not a sequence of whole events.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FileError {
    /// The first four bytes are not [`MAGIC`].
    BadMagic,
    /// An event's header claims fewer bytes than the header itself.
    BadSize { offset: usize, size: usize },
    /// The file ends inside an event (or inside its header).
    Truncated { offset: usize },
}

impl fmt::Display for FileError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FileError::BadMagic => write!(f, "not a binlog file (it does not start with 0xfe 'bin')"),
            FileError::BadSize { offset, size } => write!(
                f,
                "the event at offset {offset} claims {size} bytes, less than its {HEADER}-byte header"
            ),
            FileError::Truncated { offset } => write!(
                f,
                "the file ends inside the event at offset {offset} (copied while being written?)"
            ),
        }
    }
}

impl std::error::Error for FileError {}

/// The events of `bytes` (a whole binlog file), in order, each with its
/// offset in the file. Fails at once on a bad magic; after an error the
/// iterator ends.
pub fn events(bytes: &[u8]) -> Result<Events<'_>, FileError> {
    if bytes.get(..MAGIC.len()) != Some(&MAGIC[..]) {
        return Err(FileError::BadMagic);
    }
    Ok(Events {
        bytes,
        at: MAGIC.len(),
    })
}

/// Iterator over a binlog file's events: `(offset, event bytes)`.
pub struct Events<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Iterator for Events<'a> {
    type Item = Result<(usize, &'a [u8]), FileError>;

    fn next(&mut self) -> Option<Self::Item> {
        let at = self.at;
        let rest = self.bytes.get(at..).filter(|r| !r.is_empty())?;
        // An error ends the iteration: nothing after it can be framed.
        self.at = self.bytes.len();
        let Some(size) = rest.get(9..13) else {
            return Some(Err(FileError::Truncated { offset: at }));
        };
        let size = u32::from_le_bytes([size[0], size[1], size[2], size[3]]) as usize;
        if size < HEADER {
            return Some(Err(FileError::BadSize { offset: at, size }));
        }
        let Some(event) = rest.get(..size) else {
            return Some(Err(FileError::Truncated { offset: at }));
        };
        self.at = at + size;
        Some(Ok((at, event)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An event of `size` bytes (header with that size, then filler).
    fn event(size: u32, fill: u8) -> Vec<u8> {
        let mut e = vec![fill; size as usize];
        e[9..13].copy_from_slice(&size.to_le_bytes());
        e
    }

    fn file(events: &[Vec<u8>]) -> Vec<u8> {
        let mut f = MAGIC.to_vec();
        for e in events {
            f.extend_from_slice(e);
        }
        f
    }

    #[test]
    fn events_come_back_whole_in_order_with_their_offsets() {
        let (a, b, c) = (event(19, 1), event(40, 2), event(25, 3));
        let f = file(&[a.clone(), b.clone(), c.clone()]);
        let got: Vec<(usize, Vec<u8>)> = events(&f)
            .expect("magic")
            .map(|r| r.map(|(o, e)| (o, e.to_vec())))
            .collect::<Result<_, _>>()
            .expect("well-formed");
        assert_eq!(got, vec![(4, a), (23, b), (63, c)]);
    }

    #[test]
    fn a_file_of_only_the_magic_has_no_events() {
        assert_eq!(events(&MAGIC).expect("magic").count(), 0);
    }

    #[test]
    fn a_wrong_magic_is_refused() {
        assert_eq!(events(b"\xfebim").err(), Some(FileError::BadMagic));
        assert_eq!(events(b"").err(), Some(FileError::BadMagic));
        assert!(FileError::BadMagic
            .to_string()
            .contains("not a binlog file"));
    }

    #[test]
    fn a_file_cut_inside_an_event_or_its_header_ends_with_an_error() {
        let whole = file(&[event(30, 1), event(30, 2)]);
        for cut in [whole.len() - 1, 4 + 30 + 12, 4 + 30 + 1] {
            let got: Vec<_> = events(&whole[..cut]).expect("magic").collect();
            assert_eq!(got.len(), 2, "cut at {cut}");
            assert!(got[0].is_ok());
            assert_eq!(
                got[1],
                Err(FileError::Truncated { offset: 34 }),
                "cut at {cut}"
            );
        }
    }

    #[test]
    fn a_size_below_the_header_ends_with_an_error_not_a_loop() {
        let mut bad = event(19, 0);
        bad[9..13].copy_from_slice(&0u32.to_le_bytes());
        let f = file(&[event(20, 1), bad, event(20, 2)]);
        let got: Vec<_> = events(&f).expect("magic").collect();
        assert_eq!(got.len(), 2);
        assert_eq!(
            got[1],
            Err(FileError::BadSize {
                offset: 24,
                size: 0
            })
        );
        assert!(got[1]
            .as_ref()
            .err()
            .is_some_and(|e| e.to_string().contains("offset 24 claims 0 bytes")));
    }
}
