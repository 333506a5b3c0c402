//! What a connection may make this node do before its peer has proven it knows the
//! cookie, as pure state machines with table tests: how big a frame it may announce
//! ([`Frames`]), and how many connections one address (and all of them) may have in
//! their handshake at once ([`Handshakes`]).

use std::collections::HashMap;
use std::net::IpAddr;

/// ractor_cluster's frames as they are read: an 8-byte big-endian length, then that
/// many bytes. A header that announces more than the limit is refused before the
/// session reads (and allocates) its body.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Frames {
    header: [u8; 8],
    have: usize,
    body_left: u64,
}

impl Frames {
    /// Follows `bytes` read from the stream; `Err(length)` when a header announces
    /// a frame longer than `limit`.
    pub(crate) fn read(&mut self, mut bytes: &[u8], limit: u64) -> Result<(), u64> {
        while !bytes.is_empty() {
            if self.body_left > 0 {
                let n = (self.body_left as usize).min(bytes.len());
                self.body_left -= n as u64;
                bytes = &bytes[n..];
                continue;
            }
            let n = (8 - self.have).min(bytes.len());
            self.header[self.have..self.have + n].copy_from_slice(&bytes[..n]);
            self.have += n;
            bytes = &bytes[n..];
            if self.have == 8 {
                let length = u64::from_be_bytes(self.header);
                if length > limit {
                    return Err(length);
                }
                self.have = 0;
                self.body_left = length;
            }
        }
        Ok(())
    }
}

/// Connections in their handshake: at most `per_address` from one address and
/// `total` in all; the others are closed at once.
#[derive(Clone, Debug)]
pub(crate) struct Handshakes {
    open: HashMap<IpAddr, usize>,
    total: usize,
    per_address: usize,
    max_total: usize,
}

impl Handshakes {
    pub(crate) fn new(per_address: usize, max_total: usize) -> Self {
        Self {
            open: HashMap::new(),
            total: 0,
            per_address,
            max_total,
        }
    }

    /// A connection from `ip` begins its handshake, if there is room for it.
    pub(crate) fn begin(&mut self, ip: IpAddr) -> bool {
        let mine = self.open.get(&ip).copied().unwrap_or(0);
        if mine >= self.per_address || self.total >= self.max_total {
            return false;
        }
        self.open.insert(ip, mine + 1);
        self.total += 1;
        true
    }

    /// A connection from `ip` ended its handshake (it authenticated, or it closed).
    pub(crate) fn end(&mut self, ip: IpAddr) {
        if let Some(n) = self.open.get_mut(&ip) {
            *n -= 1;
            self.total -= 1;
            if *n == 0 {
                self.open.remove(&ip);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(length: u64, body: usize) -> Vec<u8> {
        let mut f = length.to_be_bytes().to_vec();
        f.extend(std::iter::repeat_n(7u8, body));
        f
    }

    /// A case: the stream, read in chunks of this size, the limit, what it says.
    type Case = (Vec<u8>, usize, u64, Result<(), u64>);

    #[test]
    fn the_table_of_frames() {
        let two = [frame(3, 3), frame(5, 5)].concat();
        let table: [Case; 7] = [
            (two.clone(), 1, 16, Ok(())),
            (two.clone(), 3, 16, Ok(())),
            (two.clone(), 64, 16, Ok(())),
            // A header over the limit, whole or split across reads.
            (frame(1 << 26, 0), 64, 1 << 20, Err(1 << 26)),
            (frame(1 << 26, 0), 1, 1 << 20, Err(1 << 26)),
            // After a body that was allowed, the next header is read as a header.
            ([frame(4, 4), frame(100, 0)].concat(), 5, 16, Err(100)),
            // A body's bytes that look like a huge length are not a header.
            (
                [frame(8, 0), u64::MAX.to_be_bytes().to_vec(), frame(1, 1)].concat(),
                2,
                16,
                Ok(()),
            ),
        ];
        for (stream, chunk, limit, want) in table {
            let mut frames = Frames::default();
            let got = stream.chunks(chunk).try_for_each(|c| frames.read(c, limit));
            assert_eq!(got, want, "chunks of {chunk}, limit {limit}");
        }
    }

    #[test]
    fn handshakes_are_capped_per_address_and_in_all() {
        let a: IpAddr = [10, 0, 0, 1].into();
        let b: IpAddr = [10, 0, 0, 2].into();
        let c: IpAddr = [10, 0, 0, 3].into();
        let mut h = Handshakes::new(2, 3);
        assert!(h.begin(a) && h.begin(a));
        assert!(!h.begin(a), "a third from one address");
        assert!(h.begin(b));
        assert!(!h.begin(c), "a fourth in all");
        h.end(a);
        assert!(h.begin(c), "room again once one ended");
        h.end(b);
        h.end(b); // more ends than begins change nothing
        assert_eq!(h.total, 2);
        assert!(h.begin(b));
        assert!(!h.begin(b), "three in all again");
    }
}

#[cfg(test)]
mod properties {
    use proptest::prelude::*;

    use super::*;

    proptest! {
        /// However a stream of frames is cut into reads, the watcher refuses it
        /// exactly when one of its headers announces more than the limit, and
        /// names that length.
        #[test]
        fn the_verdict_does_not_depend_on_how_the_stream_is_read(
            lengths in proptest::collection::vec(0u64..64, 1..20),
            limit in 0u64..64,
            cuts in proptest::collection::vec(1usize..17, 1..50),
        ) {
            let mut stream = Vec::new();
            for &len in &lengths {
                stream.extend_from_slice(&len.to_be_bytes());
                if len > limit {
                    break;
                }
                stream.extend(std::iter::repeat_n(0xFFu8, len as usize));
            }
            let want = lengths.iter().find(|&&l| l > limit).map_or(Ok(()), |&l| Err(l));
            let mut frames = Frames::default();
            let mut rest = &stream[..];
            let mut got = Ok(());
            for cut in cuts.iter().cycle() {
                if rest.is_empty() || got.is_err() {
                    break;
                }
                let n = (*cut).min(rest.len());
                got = frames.read(&rest[..n], limit);
                rest = &rest[n..];
            }
            prop_assert_eq!(got, want);
        }
    }
}
