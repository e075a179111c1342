//! The one pass: bytes to tape, validating as it goes.

use crate::{MAX_DEPTH, Node, Problem, Tag};

/// Bytes a string's fast scan stops at: the closing quote, an escape, a control character.
static STOPS: [bool; 256] = {
    let mut t = [false; 256];
    let mut i = 0;
    while i < 0x20 {
        t[i] = true;
        i += 1;
    }
    t[b'"' as usize] = true;
    t[b'\\' as usize] = true;
    t
};

/// The position of the first byte at or after `j` that [`STOPS`] a string's scan, or the
/// end of `b`: a byte stops the scan if it is a quote, a backslash or below 0x20. Sixteen
/// bytes at a time on x86-64, then eight at a time in a word.
#[inline]
fn scan_string(b: &[u8], j: usize) -> usize {
    #[cfg(target_arch = "x86_64")]
    let j = match scan_string_sse2(b, j) {
        Ok(stop) => return stop,
        Err(left_at) => left_at,
    };
    scan_string_words(b, j)
}

/// [`scan_string`] sixteen bytes at a time with SSE2 (part of every x86-64 processor), up to
/// the last sixteen bytes of `b`: most strings of a page end within one step. `Err` holds
/// where it stopped looking, fewer than sixteen bytes before the end.
#[cfg(target_arch = "x86_64")]
#[inline]
fn scan_string_sse2(b: &[u8], mut j: usize) -> Result<usize, usize> {
    use std::arch::x86_64::{
        __m128i, _mm_cmpeq_epi8, _mm_loadu_si128, _mm_min_epu8, _mm_movemask_epi8, _mm_or_si128,
        _mm_set1_epi8,
    };
    // SAFETY: SSE2 is in x86-64's baseline, so the intrinsics are always available; every
    // load reads the sixteen bytes `b[j..j + 16]`, which the loop condition keeps inside `b`.
    unsafe {
        let quote = _mm_set1_epi8(b'"' as i8);
        let backslash = _mm_set1_epi8(b'\\' as i8);
        let below_space = _mm_set1_epi8(0x1f);
        while j + 16 <= b.len() {
            let v = _mm_loadu_si128(b.as_ptr().add(j).cast::<__m128i>());
            // A byte at most 0x1f is its own minimum with 0x1f (unsigned).
            let control = _mm_cmpeq_epi8(_mm_min_epu8(v, below_space), v);
            let stops = _mm_or_si128(
                _mm_or_si128(_mm_cmpeq_epi8(v, quote), _mm_cmpeq_epi8(v, backslash)),
                control,
            );
            let mask = _mm_movemask_epi8(stops) as u32;
            if mask != 0 {
                return Ok(j + mask.trailing_zeros() as usize);
            }
            j += 16;
        }
    }
    Err(j)
}

/// [`scan_string`] eight bytes at a time in a plain word (SWAR), then byte by byte. Of the
/// flags the word tricks set, only the lowest is exact (borrows carry upwards), and the
/// lowest is the one taken.
#[inline]
fn scan_string_words(b: &[u8], mut j: usize) -> usize {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGHS: u64 = 0x8080_8080_8080_8080;
    const fn zero_bytes(v: u64) -> u64 {
        v.wrapping_sub(ONES) & !v & HIGHS
    }
    while let Some(chunk) = b.get(j..j + 8) {
        let mut word = [0u8; 8];
        word.copy_from_slice(chunk);
        let w = u64::from_le_bytes(word);
        let stops = zero_bytes(w ^ (ONES * u64::from(b'"')))
            | zero_bytes(w ^ (ONES * u64::from(b'\\')))
            | (w.wrapping_sub(ONES * 0x20) & !w & HIGHS);
        if stops != 0 {
            return j + (stops.trailing_zeros() / 8) as usize;
        }
        j += 8;
    }
    while j < b.len() && !STOPS[b[j] as usize] {
        j += 1;
    }
    j
}

/// A cheap signature of a key, to tell keys apart before comparing their bytes: its first
/// eight bytes and its length. Equal keys have equal signatures; two keys of one signature
/// cost one comparison of their bytes.
///
/// `b[start..end]` is the key; the eight bytes from `start` are read in one load and cut to
/// the key's length whenever the body has them (a key is followed by its quote, colon and
/// value, so nearly always), without copying a short key into a zeroed word first.
#[inline]
fn key_signature(b: &[u8], start: usize, end: usize) -> u64 {
    let len = end - start;
    let first = match b.get(start..start + 8) {
        Some(eight) => {
            let word = u64::from_le_bytes(eight.try_into().unwrap_or([0; 8]));
            if len >= 8 {
                word
            } else {
                word & ((1u64 << (8 * len)) - 1)
            }
        }
        None => {
            let mut word = [0u8; 8];
            word[..len.min(8)].copy_from_slice(&b[start..start + len.min(8)]);
            u64::from_le_bytes(word)
        }
    };
    first ^ (len as u64).rotate_right(8)
}

struct Frame {
    node: u32,
    count: u32,
    object: bool,
    /// Where this object's keys start in [`Parser::keys`].
    keys_from: u32,
    /// Whether a key of this object has an escape (its signature is of its escaped bytes).
    escaped_key: bool,
}

/// Objects with more keys than this are looked up in [`Parser::distinct`] before their keys
/// are compared; fewer are compared pairwise at once.
const REMEMBERED_FROM: usize = 4;

struct Parser<'a> {
    b: &'a [u8],
    i: usize,
    nodes: Vec<Node>,
    stack: Vec<Frame>,
    /// The signatures ([`key_signature`]) and tape positions of the keys of the open
    /// objects, innermost last: each key is noted as it is read, and an object's own are
    /// checked for duplicates and dropped when it closes.
    keys: Vec<(u64, u32)>,
    /// The open-addressing table of [`Parser::shadow_duplicates`] for wide objects (reused).
    probe: Vec<u32>,
    /// Key signature sequences, all distinct, of objects checked before, by a hash of the
    /// sequence (64 slots, the last one checked wins a slot). The records of a page repeat
    /// their keys, and an object whose plain keys have the signatures of a remembered
    /// sequence has no key twice: equal keys have equal signatures. Checking each object
    /// pairwise was a sixth of the instructions parsing ran.
    distinct: Vec<(u64, Vec<u64>)>,
}

#[cold]
fn problem(offset: usize, problem: impl Into<String>) -> Problem {
    Problem {
        offset,
        problem: problem.into(),
    }
}

/// The tape of `bytes`: one JSON value with optional whitespace around it.
pub(crate) fn parse(bytes: &[u8]) -> Result<Vec<Node>, Problem> {
    if u32::try_from(bytes.len()).is_err() {
        return Err(problem(0, "a body of 4 GiB or more"));
    }
    // UTF-8 was checked by the caller (the document holds a `String`).
    let mut p = Parser {
        b: bytes,
        i: 0,
        // About one token per 8 bytes of JSON: rarely grown.
        nodes: Vec::with_capacity(bytes.len() / 8 + 4),
        stack: Vec::new(),
        keys: Vec::new(),
        probe: Vec::new(),
        distinct: Vec::new(),
    };
    p.run()?;
    Ok(p.nodes)
}

impl Parser<'_> {
    /// Skips whitespace, where the next token's own match cannot: APIs send compact JSON,
    /// so a byte above the space (no whitespace) is one comparison, where matching the four
    /// whitespace bytes took a seventh of the instructions parsing ran. Between most tokens
    /// the match that reads the next token has an arm for whitespace instead, which calls
    /// [`Parser::skip_ws_slow`] and matches again: compact JSON then costs no comparison
    /// for it at all (parsing 4000 mock events: 190.2M -> 181.6M instructions).
    #[inline(always)]
    fn skip_ws(&mut self) {
        if let Some(&c) = self.b.get(self.i)
            && c > b' '
        {
            return;
        }
        self.skip_ws_slow();
    }

    fn skip_ws_slow(&mut self) {
        while let Some(b' ' | b'\n' | b'\r' | b'\t') = self.b.get(self.i) {
            self.i += 1;
        }
    }

    fn push(&mut self, tag: Tag, start: usize, end: usize) -> u32 {
        let idx = self.nodes.len() as u32;
        self.nodes.push(Node {
            tag,
            shadowed: false,
            start: start as u32,
            end: end as u32,
            a: 0,
            b: 0,
        });
        idx
    }

    fn push_number(&mut self, tag: Tag, start: usize, end: usize, bits: u64) {
        let idx = self.push(tag, start, end) as usize;
        self.nodes[idx].a = (bits >> 32) as u32;
        self.nodes[idx].b = bits as u32;
    }

    fn run(&mut self) -> Result<(), Problem> {
        let mut want_value = true;
        loop {
            if want_value {
                self.value()?;
            }
            // A value just ended: it belongs to the innermost open list or object.
            let Some(frame) = self.stack.last_mut() else {
                self.skip_ws();
                if self.i < self.b.len() {
                    return Err(problem(self.i, "trailing characters"));
                }
                return Ok(());
            };
            frame.count += 1;
            let object = frame.object;
            loop {
                match (self.b.get(self.i), object) {
                    (Some(b','), false) => {
                        self.i += 1;
                        want_value = true;
                    }
                    (Some(b','), true) => {
                        self.i += 1;
                        self.key()?;
                        want_value = true;
                    }
                    (Some(b']'), false) | (Some(b'}'), true) => {
                        self.close()?;
                        want_value = false;
                    }
                    (Some(b' ' | b'\n' | b'\r' | b'\t'), _) => {
                        self.skip_ws_slow();
                        continue;
                    }
                    (None, false) => return Err(problem(self.i, "EOF while parsing a list")),
                    (None, true) => return Err(problem(self.i, "EOF while parsing an object")),
                    (Some(_), false) => return Err(problem(self.i, "expected `,` or `]`")),
                    (Some(_), true) => return Err(problem(self.i, "expected `,` or `}`")),
                }
                break;
            }
        }
    }

    /// One value at `i`; a list or object is opened (and closed at once when empty). Leaves
    /// `want_value` to the caller: after an opened, non-empty container the next token is
    /// its first value.
    fn value(&mut self) -> Result<(), Problem> {
        loop {
            let i = self.i;
            match self.b.get(i) {
                Some(b'"') => return self.string().map(|_| ()),
                Some(b'-' | b'0'..=b'9') => return self.number(),
                Some(b't') => return self.literal(b"true", Tag::True),
                Some(b'f') => return self.literal(b"false", Tag::False),
                Some(b'n') => return self.literal(b"null", Tag::Null),
                Some(&open @ (b'[' | b'{')) => {
                    if self.stack.len() >= MAX_DEPTH {
                        return Err(problem(
                            i,
                            format!("lists and objects nested deeper than {MAX_DEPTH} levels"),
                        ));
                    }
                    let object = open == b'{';
                    let node = self.push(if object { Tag::Object } else { Tag::Array }, i, i);
                    self.stack.push(Frame {
                        node,
                        count: 0,
                        object,
                        keys_from: self.keys.len() as u32,
                        escaped_key: false,
                    });
                    self.i += 1;
                    self.skip_ws();
                    let close = if object { b'}' } else { b']' };
                    if self.b.get(self.i) == Some(&close) {
                        // Empty: closed here; the caller goes on after it.
                        self.close()?;
                        return Ok(());
                    }
                    if object {
                        self.key()?;
                    }
                    // The first item follows.
                }
                Some(b' ' | b'\n' | b'\r' | b'\t') => self.skip_ws_slow(),
                None => return Err(problem(i, "EOF while parsing a value")),
                Some(_) => return Err(problem(i, "expected value")),
            }
        }
    }

    /// An object's key and its colon; the value follows. Inlined into its two callers: as
    /// a call, its entry and exit were an eighth of the instructions parsing ran.
    #[inline(always)]
    fn key(&mut self) -> Result<(), Problem> {
        loop {
            match self.b.get(self.i) {
                Some(b'"') => {
                    let (at, start, end, escaped) = self.string()?;
                    self.keys.push((key_signature(self.b, start, end), at));
                    if escaped && let Some(frame) = self.stack.last_mut() {
                        frame.escaped_key = true;
                    }
                    break;
                }
                Some(b' ' | b'\n' | b'\r' | b'\t') => self.skip_ws_slow(),
                None => return Err(problem(self.i, "EOF while parsing an object")),
                Some(_) => return Err(problem(self.i, "key must be a string")),
            }
        }
        loop {
            match self.b.get(self.i) {
                Some(b':') => {
                    self.i += 1;
                    return Ok(());
                }
                Some(b' ' | b'\n' | b'\r' | b'\t') => self.skip_ws_slow(),
                None => return Err(problem(self.i, "EOF while parsing an object")),
                Some(_) => return Err(problem(self.i, "expected `:`")),
            }
        }
    }

    /// Closes the innermost list or object at `i` (its closing bracket).
    fn close(&mut self) -> Result<(), Problem> {
        let Some(frame) = self.stack.pop() else {
            return Ok(());
        };
        let after = self.nodes.len() as u32;
        let end = self.i + 1;
        let n = &mut self.nodes[frame.node as usize];
        n.end = end as u32;
        n.a = after;
        n.b = frame.count;
        self.i = end;
        if frame.object {
            if frame.count > 1 {
                self.check_keys(&frame);
            }
            self.keys.truncate(frame.keys_from as usize);
        }
        Ok(())
    }

    /// Finds the keys of the object of `frame` that a later key shadows, unless its plain
    /// keys' signatures are a sequence remembered as distinct.
    fn check_keys(&mut self, frame: &Frame) {
        let from = frame.keys_from as usize;
        let n = self.keys.len() - from;
        if frame.escaped_key {
            self.shadow_duplicates(frame.node, from);
            return;
        }
        if n <= REMEMBERED_FROM {
            // Distinct signatures mean distinct keys; only a pair of equal signatures needs
            // the keys' bytes compared. Each size written out, not two loops over the pairs
            // (parsing 4000 mock events: 181.6M -> 173.7M instructions).
            let equal_signatures = match &self.keys[from..] {
                [(a, _), (b, _)] => a == b,
                [(a, _), (b, _), (c, _)] => (a == b) | (a == c) | (b == c),
                [(a, _), (b, _), (c, _), (d, _)] => {
                    (a == b) | (a == c) | (a == d) | (b == c) | (b == d) | (c == d)
                }
                // Not reached (an object here has two to four keys); a full check is always
                // right.
                _ => true,
            };
            if equal_signatures {
                self.shadow_duplicates(frame.node, from);
            }
            return;
        }
        let signatures = || self.keys[from..].iter().map(|&(signature, _)| signature);
        let hash = signatures().fold(n as u64, |h, s| {
            (h.rotate_left(23) ^ s).wrapping_mul(0x9E37_79B9_7F4A_7C15)
        });
        if self.distinct.is_empty() {
            self.distinct.resize_with(64, Default::default);
        }
        let slot = (hash >> 58) as usize;
        let (held, sequence) = &self.distinct[slot];
        if *held == hash && sequence.len() == n && sequence.iter().copied().eq(signatures()) {
            return;
        }
        if self.shadow_duplicates(frame.node, from) {
            let entry = &mut self.distinct[slot];
            entry.0 = hash;
            entry.1.clear();
            entry
                .1
                .extend(self.keys[from..].iter().map(|&(signature, _)| signature));
        }
    }

    /// Marks each key of an object that a later equal key shadows (the last one wins, as in
    /// `serde_json`); its keys are `self.keys[from..]`. Keys are told apart by their
    /// signatures first, so that an object of distinct keys (nearly every one) costs no
    /// comparison of their bytes: pairwise for a few keys, through a hash table for more.
    ///
    /// Returns whether the keys' signatures are all distinct (and none has an escape).
    fn shadow_duplicates(&mut self, object: u32, from: usize) -> bool {
        let keys = &self.keys[from..];
        let nodes = &self.nodes;
        let b = self.b;
        let bytes = |i: u32| {
            let node = &nodes[i as usize];
            &b[node.start as usize..node.end as usize]
        };
        let mut shadowed = Vec::new();
        let mut distinct = true;
        if keys
            .iter()
            .any(|&(_, i)| nodes[i as usize].tag == Tag::EscStr)
        {
            distinct = false;
            // An escape may spell a key another key spells plainly: compare the texts.
            let text = |i: u32| -> std::borrow::Cow<'_, [u8]> {
                if nodes[i as usize].tag == Tag::EscStr {
                    let raw = std::str::from_utf8(bytes(i)).unwrap_or("");
                    std::borrow::Cow::Owned(unescape(raw).into_bytes())
                } else {
                    std::borrow::Cow::Borrowed(bytes(i))
                }
            };
            let mut sorted: Vec<(std::borrow::Cow<'_, [u8]>, u32)> =
                keys.iter().map(|&(_, i)| (text(i), i)).collect();
            sorted.sort();
            for pair in sorted.windows(2) {
                if pair[0].0 == pair[1].0 {
                    // Same text: the earlier position is shadowed.
                    shadowed.push(pair[0].1);
                }
            }
        } else if keys.len() <= 16 {
            for (x, &(signature, i)) in keys.iter().enumerate() {
                for &(s, j) in &keys[x + 1..] {
                    if s == signature {
                        distinct = false;
                        if bytes(j) == bytes(i) {
                            shadowed.push(i);
                            break;
                        }
                    }
                }
            }
        } else {
            // Open addressing over the signatures; each slot holds an index into `keys`.
            let size = (keys.len() * 2).next_power_of_two();
            let shift = 64 - size.trailing_zeros();
            self.probe.clear();
            self.probe.resize(size, u32::MAX);
            for (x, &(signature, i)) in keys.iter().enumerate() {
                let mut slot = (signature.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> shift) as usize;
                loop {
                    let held = self.probe[slot];
                    if held == u32::MAX {
                        self.probe[slot] = x as u32;
                        break;
                    }
                    let (s, j) = keys[held as usize];
                    distinct &= s != signature;
                    if s == signature && bytes(j) == bytes(i) {
                        // The earlier key is shadowed; the slot now holds the later.
                        shadowed.push(j);
                        self.probe[slot] = x as u32;
                        break;
                    }
                    slot = (slot + 1) & (size - 1);
                }
            }
        }
        if shadowed.is_empty() {
            return distinct;
        }
        self.nodes[object as usize].b -= shadowed.len() as u32;
        for i in shadowed {
            self.nodes[i as usize].shadowed = true;
        }
        distinct
    }

    fn literal(&mut self, word: &'static [u8], tag: Tag) -> Result<(), Problem> {
        let i = self.i;
        if self.b[i..].starts_with(word) {
            self.push(tag, i, i + word.len());
            self.i += word.len();
            Ok(())
        } else {
            let bad = (0..word.len())
                .find(|&k| self.b.get(i + k) != Some(&word[k]))
                .map_or(i, |k| i + k);
            if bad >= self.b.len() {
                Err(problem(bad, "EOF while parsing a value"))
            } else {
                Err(problem(bad, "expected ident"))
            }
        }
    }

    /// A string at `i`: its tape position, the span of its text and whether it has escapes.
    /// Inlined into its two callers (a key, a value): as a call, its entry and exit were a
    /// seventh of the instructions parsing ran.
    #[inline(always)]
    fn string(&mut self) -> Result<(u32, usize, usize, bool), Problem> {
        let start = self.i + 1;
        let b = self.b;
        let mut j = start;
        let mut escaped = false;
        loop {
            j = scan_string(b, j);
            match b.get(j) {
                None => return Err(problem(b.len(), "EOF while parsing a string")),
                Some(b'"') => break,
                Some(b'\\') => {
                    escaped = true;
                    j = escape(b, j)?;
                }
                Some(_) => {
                    return Err(problem(
                        j,
                        "control character (\\u0000-\\u001F) found while parsing a string",
                    ));
                }
            }
        }
        let at = self.push(if escaped { Tag::EscStr } else { Tag::Str }, start, j);
        self.i = j + 1;
        Ok((at, start, j, escaped))
    }

    fn number(&mut self) -> Result<(), Problem> {
        let b = self.b;
        let start = self.i;
        let mut j = start;
        let negative = b[j] == b'-';
        if negative {
            j += 1;
        }
        let digits = |j: &mut usize| {
            let from = *j;
            while *j < b.len() && b[*j].is_ascii_digit() {
                *j += 1;
            }
            *j - from
        };
        // The integer part's value as it is read; `None` past u64.
        let mut magnitude = Some(0u64);
        match b.get(j) {
            Some(b'0') => j += 1,
            Some(b'1'..=b'9') => {
                // Nineteen digits always fit a u64: those are summed without overflow checks
                // (the checked sum per digit was a twentieth of parsing the mock's pages).
                let mut m = 0u64;
                let fast_end = (j + 19).min(b.len());
                while j < fast_end && b[j].is_ascii_digit() {
                    m = m * 10 + u64::from(b[j] - b'0');
                    j += 1;
                }
                magnitude = Some(m);
                while let Some(&d @ b'0'..=b'9') = b.get(j) {
                    magnitude = magnitude
                        .and_then(|m| m.checked_mul(10))
                        .and_then(|m| m.checked_add(u64::from(d - b'0')));
                    j += 1;
                }
            }
            None => return Err(problem(j, "EOF while parsing a value")),
            Some(_) => return Err(problem(j, "invalid number")),
        }
        let mut float = false;
        if b.get(j) == Some(&b'.') {
            j += 1;
            if digits(&mut j) == 0 {
                return Err(problem(j, "invalid number"));
            }
            float = true;
        }
        if let Some(b'e' | b'E') = b.get(j) {
            j += 1;
            if let Some(b'+' | b'-') = b.get(j) {
                j += 1;
            }
            if digits(&mut j) == 0 {
                return Err(problem(j, "invalid number"));
            }
            float = true;
        }
        if float {
            // ASCII only, checked above.
            let text = std::str::from_utf8(&b[start..j]).unwrap_or("");
            let f: f64 = text.parse().unwrap_or(f64::NAN);
            if !f.is_finite() {
                return Err(problem(start, "number out of range"));
            }
            self.push_number(Tag::Float, start, j, f.to_bits());
        } else if negative {
            match magnitude {
                // serde_json reads `-0` as the double -0.0.
                Some(0) => self.push_number(Tag::Float, start, j, (-0.0f64).to_bits()),
                Some(m) if m <= i64::MIN.unsigned_abs() => {
                    self.push_number(Tag::Int, start, j, m.wrapping_neg())
                }
                _ => self.push_number(Tag::Big, start, j, 0),
            }
        } else {
            match magnitude {
                Some(u) if i64::try_from(u).is_ok() => self.push_number(Tag::Int, start, j, u),
                Some(u) => self.push_number(Tag::UInt, start, j, u),
                None => self.push_number(Tag::Big, start, j, 0),
            }
        }
        self.i = j;
        Ok(())
    }
}

fn hex4(b: &[u8], at: usize) -> Option<u32> {
    let digits = b.get(at..at + 4)?;
    if !digits.iter().all(u8::is_ascii_hexdigit) {
        return None;
    }
    u32::from_str_radix(std::str::from_utf8(digits).ok()?, 16).ok()
}

fn lone_surrogate(b: &[u8], at: usize) -> Problem {
    let escape = String::from_utf8_lossy(&b[at..(at + 6).min(b.len())]).into_owned();
    problem(
        at,
        format!(
            "the escape `{escape}` is half of a UTF-16 surrogate pair without its other half, not a character"
        ),
    )
}

/// Checks the escape at `j` (a backslash); returns the position after it.
fn escape(b: &[u8], j: usize) -> Result<usize, Problem> {
    match b.get(j + 1) {
        Some(b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't') => Ok(j + 2),
        Some(b'u') => match hex4(b, j + 2) {
            Some(0xD800..=0xDBFF) => {
                let low = (b.get(j + 6) == Some(&b'\\') && b.get(j + 7) == Some(&b'u'))
                    .then(|| hex4(b, j + 8))
                    .flatten();
                match low {
                    Some(0xDC00..=0xDFFF) => Ok(j + 12),
                    _ => Err(lone_surrogate(b, j)),
                }
            }
            Some(0xDC00..=0xDFFF) => Err(lone_surrogate(b, j)),
            Some(_) => Ok(j + 6),
            None if b.len() < j + 6 => Err(problem(b.len(), "EOF while parsing a string")),
            None => Err(problem(j, "invalid escape")),
        },
        None => Err(problem(b.len(), "EOF while parsing a string")),
        Some(_) => Err(problem(j, "invalid escape")),
    }
}

/// The text of a string's content with its escapes decoded (parsing checked them).
pub(crate) fn unescape(raw: &str) -> String {
    let b = raw.as_bytes();
    let mut out = String::with_capacity(raw.len());
    let mut i = 0;
    while i < b.len() {
        let Some(k) = b[i..].iter().position(|&c| c == b'\\') else {
            out.push_str(&raw[i..]);
            break;
        };
        out.push_str(&raw[i..i + k]);
        i += k;
        let c = match b.get(i + 1) {
            Some(b'"') => '"',
            Some(b'\\') => '\\',
            Some(b'/') => '/',
            Some(b'b') => '\u{8}',
            Some(b'f') => '\u{c}',
            Some(b'n') => '\n',
            Some(b'r') => '\r',
            Some(b't') => '\t',
            Some(b'u') => {
                let hi = hex4(b, i + 2).unwrap_or(0xFFFD);
                if (0xD800..=0xDBFF).contains(&hi) {
                    let lo = hex4(b, i + 8).unwrap_or(0xDC00);
                    i += 6;
                    char::from_u32(0x10000 + ((hi - 0xD800) << 10) + (lo - 0xDC00))
                        .unwrap_or('\u{FFFD}')
                } else {
                    char::from_u32(hi).unwrap_or('\u{FFFD}')
                }
            }
            _ => '\u{FFFD}',
        };
        out.push(c);
        i += if b.get(i + 1) == Some(&b'u') { 6 } else { 2 };
    }
    out
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::{STOPS, scan_string};

    proptest! {
        /// The word-at-a-time scan stops where the byte-at-a-time one does, from any start.
        #[test]
        fn scan_string_stops_where_a_byte_scan_does(
            bytes in proptest::collection::vec(
                prop_oneof![Just(b'"'), Just(b'\\'), 0u8..0x20, 0x20u8..=0xff, b'a'..=b'z'],
                0..64,
            ),
            start in 0usize..64,
        ) {
            let start = start.min(bytes.len());
            let expected = (start..bytes.len())
                .find(|&j| STOPS[bytes[j] as usize])
                .unwrap_or(bytes.len());
            prop_assert_eq!(scan_string(&bytes, start), expected);
        }
    }
}
