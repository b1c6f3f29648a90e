//! The deterministic payload both ends of a transfer agree on, so that a byte moved, lost or
//! corrupted on the way is caught, and the pacing that stretches a transfer across a switch.

use std::io::{self, ErrorKind, Read, Write};
use std::thread;
use std::time::{Duration, Instant};

/// Chunk size for paced transfers.
const PACED_CHUNK: usize = 16 * 1024;
/// Chunk size for unpaced transfers.
pub(crate) const FAST_CHUNK: usize = 128 * 1024;

/// SplitMix64 finalizer: a fast, well-mixed 64-bit hash.
pub(crate) fn splitmix64(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// The payload byte at stream position `offset`: byte `offset % 8` of
/// `splitmix64(offset / 8)`. Both ends of a transfer use it to verify content.
pub(crate) fn payload_byte(offset: u64) -> u8 {
    splitmix64(offset / 8).to_le_bytes()[(offset % 8) as usize]
}

/// Fills `buf` with the payload bytes starting at stream position `start`.
pub(crate) fn fill_payload(start: u64, buf: &mut [u8]) {
    let misalign = (start % 8) as usize;
    let head_len = if misalign == 0 { 0 } else { 8 - misalign }.min(buf.len());
    let (head, rest) = buf.split_at_mut(head_len);
    for (i, byte) in head.iter_mut().enumerate() {
        *byte = payload_byte(start + i as u64);
    }
    let aligned = start + head_len as u64;
    let mut words = rest.chunks_exact_mut(8);
    let mut word_index = aligned / 8;
    for word in &mut words {
        word.copy_from_slice(&splitmix64(word_index).to_le_bytes());
        word_index += 1;
    }
    for (i, byte) in words.into_remainder().iter_mut().enumerate() {
        *byte = payload_byte(word_index * 8 + i as u64);
    }
}

/// Incrementally checks a received byte stream against the payload.
pub(crate) struct Verifier {
    pub(crate) offset: u64,
    pub(crate) first_bad: Option<u64>,
    pub(crate) expected: Vec<u8>,
}

impl Verifier {
    pub(crate) fn new() -> Self {
        Verifier {
            offset: 0,
            first_bad: None,
            expected: Vec::new(),
        }
    }

    /// Checks the next `data` bytes of the stream.
    pub(crate) fn feed(&mut self, data: &[u8]) {
        if self.first_bad.is_none() {
            self.expected.resize(data.len(), 0);
            fill_payload(self.offset, &mut self.expected);
            if let Some(pos) = data.iter().zip(&self.expected).position(|(a, b)| a != b) {
                self.first_bad = Some(self.offset + pos as u64);
            }
        }
        self.offset += data.len() as u64;
    }
}

/// Sleeps as needed to hold a transfer to `rate` bytes per second.
pub(crate) struct Pacer {
    pub(crate) start: Instant,
    pub(crate) rate: Option<u64>,
}

impl Pacer {
    pub(crate) fn new(rate: Option<u64>) -> Self {
        Pacer {
            start: Instant::now(),
            rate,
        }
    }

    /// Chunk size to use for this transfer.
    pub(crate) fn chunk_size(&self) -> usize {
        if self.rate.is_some() {
            PACED_CHUNK
        } else {
            FAST_CHUNK
        }
    }

    /// Waits until `sent` bytes are due at the configured rate.
    pub(crate) fn wait(&self, sent: u64) {
        if let Some(rate) = self.rate {
            let due = Duration::from_secs_f64(sent as f64 / rate as f64);
            let elapsed = self.start.elapsed();
            if due > elapsed {
                thread::sleep(due - elapsed);
            }
        }
    }
}

/// Writes payload bytes `0..len` to `out`, paced by `pacer`.
pub(crate) fn write_payload(out: &mut impl Write, len: u64, pacer: &Pacer) -> io::Result<u64> {
    let mut buf = vec![0u8; pacer.chunk_size()];
    let mut sent = 0u64;
    while sent < len {
        let n = (len - sent).min(buf.len() as u64) as usize;
        fill_payload(sent, &mut buf[..n]);
        out.write_all(&buf[..n])?;
        sent += n as u64;
        pacer.wait(sent);
    }
    out.flush()?;
    Ok(sent)
}

/// Reads exactly `len` bytes from `input`, feeding them to `verifier`.
/// Returns the number of bytes read before EOF or an error.
pub(crate) fn read_verified(
    input: &mut impl Read,
    len: u64,
    verifier: &mut Verifier,
) -> (u64, io::Result<()>) {
    let mut buf = vec![0u8; FAST_CHUNK];
    let mut received = 0u64;
    while received < len {
        let want = (len - received).min(buf.len() as u64) as usize;
        match input.read(&mut buf[..want]) {
            Ok(0) => {
                let err = io::Error::new(ErrorKind::UnexpectedEof, "connection closed early");
                return (received, Err(err));
            }
            Ok(n) => {
                verifier.feed(&buf[..n]);
                received += n as u64;
            }
            Err(err) if err.kind() == ErrorKind::Interrupted => {}
            Err(err) => return (received, Err(err)),
        }
    }
    (received, Ok(()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payload_is_deterministic_and_varied() {
        let a: Vec<u8> = (0..4096).map(payload_byte).collect();
        let b: Vec<u8> = (0..4096).map(payload_byte).collect();
        assert_eq!(a, b);
        assert_eq!(payload_byte(0), splitmix64(0).to_le_bytes()[0]);
        assert_eq!(payload_byte(13), splitmix64(1).to_le_bytes()[5]);
        let distinct: std::collections::HashSet<u8> = a.iter().copied().collect();
        assert!(
            distinct.len() > 200,
            "payload should cover most byte values"
        );
    }

    #[test]
    fn fill_payload_matches_payload_byte_at_any_alignment() {
        for start in [0u64, 1, 5, 7, 8, 9, 1_000_003] {
            for len in [0usize, 1, 3, 8, 15, 64, 77] {
                let mut buf = vec![0u8; len];
                fill_payload(start, &mut buf);
                let expected: Vec<u8> = (start..start + len as u64).map(payload_byte).collect();
                assert_eq!(buf, expected, "start {start} len {len}");
            }
        }
    }

    #[test]
    fn verifier_reports_first_bad_offset_across_chunks() {
        let mut data = vec![0u8; 1000];
        fill_payload(0, &mut data);
        let mut ok = Verifier::new();
        data.chunks(7).for_each(|c| ok.feed(c));
        assert_eq!(ok.first_bad, None);
        data[500] ^= 0xff;
        data[700] ^= 0xff;
        let mut bad = Verifier::new();
        data.chunks(33).for_each(|c| bad.feed(c));
        assert_eq!(bad.first_bad, Some(500));
        assert_eq!(bad.offset, 1000);
    }
}
