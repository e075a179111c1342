//! The content hash of a merged root record (`_errlake_content_hash`), written by the
//! normalizer's own walk over the record.
//!
//! Every key and value, in the order the API sent them (and the pair a child resource's
//! record gets, last), are written as tagged bytes into a buffer reused across records, and
//! the buffer is hashed in one call: xxh3-64, as 16 hex digits. Whitespace and escapes of
//! the body do not count. The normalizer writes those bytes as it flattens the record, so a
//! record is walked once; [`feed`] writes a whole value, for the parts it does not flatten
//! (excluded columns, values kept as JSON text) and as the reference the tests compare
//! against. Lakes store these digests, so the bytes written must never change.

use json_tape::{Kind, Number, Value};

const NULL: u8 = 0;
const BOOL: u8 = 1;
const UNSIGNED: u8 = 2;
const SIGNED: u8 = 3;
const FLOAT: u8 = 4;
const TEXT: u8 = 5;
const LIST: u8 = 6;
const OBJECT: u8 = 7;

#[inline]
fn len(out: &mut Vec<u8>, n: usize) {
    out.extend_from_slice(&(n as u64).to_le_bytes());
}

/// A tag and a length or number, written as one 9-byte block (one check of the buffer's
/// room instead of two).
#[inline(always)]
fn tagged(out: &mut Vec<u8>, tag: u8, bits: u64) {
    let mut block = [tag; 9];
    block[1..].copy_from_slice(&bits.to_le_bytes());
    out.extend_from_slice(&block);
}

/// `null`.
#[inline]
pub(crate) fn null(out: &mut Vec<u8>) {
    out.push(NULL);
}

/// `true` or `false`.
#[inline]
pub(crate) fn boolean(out: &mut Vec<u8>, b: bool) {
    out.extend_from_slice(&[BOOL, u8::from(b)]);
}

/// A number; an integer beyond 64 bits as the digits it was kept as.
#[inline]
pub(crate) fn number(out: &mut Vec<u8>, n: Option<Number<'_>>) {
    let (tag, bits) = match n {
        Some(Number::Int(i)) if i >= 0 => (UNSIGNED, i as u64),
        Some(Number::Int(i)) => (SIGNED, i as u64),
        Some(Number::UInt(u)) => (UNSIGNED, u),
        Some(Number::Float(f)) => (FLOAT, f.to_bits()),
        Some(Number::Big(digits)) => return text(out, digits),
        None => return null(out),
    };
    tagged(out, tag, bits);
}

/// A string.
#[inline]
pub(crate) fn text(out: &mut Vec<u8>, s: &str) {
    tagged(out, TEXT, s.len() as u64);
    out.extend_from_slice(s.as_bytes());
}

/// The start of a list of `n` items (the items follow).
#[inline]
pub(crate) fn list(out: &mut Vec<u8>, n: usize) {
    tagged(out, LIST, n as u64);
}

/// The start of an object of `n` pairs (each pair's [`key`] and value follow).
#[inline]
pub(crate) fn object(out: &mut Vec<u8>, n: usize) {
    tagged(out, OBJECT, n as u64);
}

/// An object's key (its value follows).
#[inline]
pub(crate) fn key(out: &mut Vec<u8>, k: &str) {
    len(out, k.len());
    out.extend_from_slice(k.as_bytes());
}

/// An object's key given as [`json_tape::Key::short`] gives it: the same bytes as [`key`]
/// writes, its length and its 16-byte block copied as one 24-byte block and cut to the
/// key's length (a call to copy a few bytes cost more than the copy).
#[inline]
pub(crate) fn short_key(out: &mut Vec<u8>, short: u128) {
    // A short key holds no zero byte: its length is where its bytes end.
    let n = 16 - (short.leading_zeros() / 8) as usize;
    let mut block = [0u8; 24];
    block[..8].copy_from_slice(&(n as u64).to_le_bytes());
    block[8..].copy_from_slice(&short.to_le_bytes());
    let at = out.len();
    out.extend_from_slice(&block);
    out.truncate(at + 8 + n);
}

/// A whole value, and `extra` as the last pair of an object.
pub(crate) fn feed(out: &mut Vec<u8>, v: Value<'_>, extra: Option<(&str, &str)>) {
    match v.kind() {
        Kind::Null => null(out),
        Kind::Bool => boolean(out, v.as_bool() == Some(true)),
        Kind::Number => number(out, v.as_number()),
        Kind::String => text(out, &v.as_str().unwrap_or_default()),
        Kind::Array => {
            list(out, v.len());
            for item in v.elements() {
                feed(out, item, None);
            }
        }
        Kind::Object => {
            object(out, v.len() + usize::from(extra.is_some()));
            for (k, item) in v.members() {
                key(out, &k.as_str());
                feed(out, item, None);
            }
            if let Some((k, value)) = extra {
                key(out, k);
                text(out, value);
            }
        }
    }
}

/// The digest of the bytes written, as 16 hex digits: XXH3-64, computed by twox-hash, which
/// takes AVX2 where the processor has it (a record's bytes are a few kilobytes, and hashing
/// them with xxhash-rust's SSE2 loop was 4% of normalization's instructions).
pub(crate) fn digest(bytes: &[u8]) -> Hex<16> {
    Hex::of(u128::from(twox_hash::XxHash3_64::oneshot(bytes)))
}

/// A hash as `N` lowercase hex digits, on the stack (row ids and content hashes are made for
/// every row: formatting them into a `String` each was a twentieth of normalization). Row
/// ids are `Hex<32>` of a 128-bit hash, content hashes `Hex<16>` of a 64-bit one; the sink
/// writes the digests it holds as bytes back to text with it.
#[derive(Clone, Copy)]
pub struct Hex<const N: usize>([u8; N]);

impl<const N: usize> Hex<N> {
    /// The low `4 * N` bits of `value`, most significant digit first.
    #[inline]
    pub fn of(value: u128) -> Self {
        // The two digits of each byte value, looked up at once: digit by digit, a row id
        // took about 290 instructions.
        const PAIRS: [[u8; 2]; 256] = {
            const DIGITS: &[u8; 16] = b"0123456789abcdef";
            let mut pairs = [[0u8; 2]; 256];
            let mut byte = 0;
            while byte < 256 {
                pairs[byte] = [DIGITS[byte >> 4], DIGITS[byte & 0xf]];
                byte += 1;
            }
            pairs
        };
        // Two digits per byte of the big-endian value, from its last `N / 2` bytes.
        let bytes = value.to_be_bytes();
        let mut out = [b'0'; N];
        for (pair, byte) in out.chunks_exact_mut(2).zip(&bytes[16 - N / 2..]) {
            pair.copy_from_slice(&PAIRS[usize::from(*byte)]);
        }
        Hex(out)
    }

    /// The digits.
    pub fn as_str(&self) -> &str {
        // SAFETY: `of` writes only the ASCII digits of `PAIRS` (or `0`), so the bytes are
        // UTF-8 (checking them took about 50 instructions a row id).
        unsafe { std::str::from_utf8_unchecked(&self.0) }
    }
}

#[cfg(test)]
mod tests {
    /// The digest is XXH3-64 whichever implementation computes it: twox-hash's (AVX2, SSE2 or
    /// scalar, chosen at run time) gives xxhash-rust's digest for inputs of every length
    /// class (up to 16, 128 and 240 bytes, and the long loop's stripes and blocks).
    #[test]
    fn the_digest_is_the_xxh3_64_lakes_stored() {
        let mut state = 0x9E37_79B9_7F4A_7C15u64;
        let bytes: Vec<u8> = (0..5000)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                state as u8
            })
            .collect();
        for len in (0..300).chain([1023, 1024, 1025, 2048, 4095, 4999]) {
            let input = &bytes[..len];
            assert_eq!(
                twox_hash::XxHash3_64::oneshot(input),
                xxhash_rust::xxh3::xxh3_64(input),
                "{len} bytes"
            );
        }
    }
}
