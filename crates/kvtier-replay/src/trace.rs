//! [`Trace`]: requests as lists of prefix block ids, and the Mooncake JSONL reader and writer.
//!
//! A Mooncake FAST'25 trace holds one JSON object per line:
//!
//! ```text
//! {"timestamp": 0, "input_length": 6758, "output_length": 500, "hash_ids": [0, 1, 2, 3]}
//! ```
//!
//! Only `hash_ids` is required; `timestamp` (ms), `input_length` and `output_length` (tokens)
//! are kept when present; other fields are ignored. Blank lines are skipped silently.
//!
//! This module owns parsing and the in-memory layout (all ids of all requests in one flat
//! vector, plus offsets), not the meaning of ids: turning ids into chained keys is
//! [`Chains`](crate::Chains)' job.
//!
//! # Errors and modes
//! A line that is not a valid request yields a [`ParseError`] carrying its 1-based line number.
//! [`ParseMode::Strict`] stops at the first one; [`ParseMode::Lenient`] skips the line, keeps
//! the error (the first [`MAX_KEPT_ERRORS`] of them; the rest are only counted) and goes on.
//! An I/O error of the reader aborts in both modes.
//!
//! # Limits
//! A reader may be endless (a pipe) or hostile (gigabytes without a newline), so
//! [`Trace::from_reader`] reads under [`ReadLimits`]: a line longer than
//! [`ReadLimits::DEFAULT_MAX_LINE_BYTES`] or an input longer than
//! [`ReadLimits::DEFAULT_MAX_TOTAL_BYTES`] ends the read with an error instead of exhausting
//! memory; [`Trace::from_reader_with_limits`] sets other bounds. Memory held is then at most a
//! small multiple of the bytes read (8 bytes per id, and an id takes at least 2 bytes of JSON).

use std::io::{BufRead, Read, Write};

use serde::{Deserialize, Serialize};

/// Most parse errors a lenient parse keeps; further bad lines are counted in
/// [`Parsed::skipped_lines`] only, so a garbage file cannot exhaust memory.
pub const MAX_KEPT_ERRORS: usize = 1000;

/// Bounds on what [`Trace::from_reader_with_limits`] reads.
///
/// # Examples
///
/// ```
/// use kvtier_replay::{ParseMode, ReadLimits, Trace, TraceError};
///
/// let limits = ReadLimits::default().with_max_line_bytes(16);
/// let text = "{\"hash_ids\": [1]}\n{\"hash_ids\": [1, 2, 3, 4, 5]}\n";
/// let err = Trace::from_reader_with_limits(text.as_bytes(), ParseMode::Lenient, limits);
/// assert!(matches!(err, Err(TraceError::LineTooLong { line: 1, limit: 16 })));
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReadLimits {
    max_line_bytes: usize,
    max_total_bytes: u64,
}

impl Default for ReadLimits {
    fn default() -> Self {
        Self {
            max_line_bytes: Self::DEFAULT_MAX_LINE_BYTES,
            max_total_bytes: Self::DEFAULT_MAX_TOTAL_BYTES,
        }
    }
}

impl ReadLimits {
    /// Default longest line, 16 MiB (about two million ids; the longest line of the shipped
    /// Mooncake trace is a few kilobytes).
    pub const DEFAULT_MAX_LINE_BYTES: usize = 16 << 20;
    /// Default largest input, 1 GiB (the shipped trace is 3 MB).
    pub const DEFAULT_MAX_TOTAL_BYTES: u64 = 1 << 30;

    /// Longest accepted line in bytes, newline excluded. Default
    /// [`Self::DEFAULT_MAX_LINE_BYTES`]; values below 1 count as 1.
    pub fn with_max_line_bytes(mut self, n: usize) -> Self {
        self.max_line_bytes = n.max(1);
        self
    }

    /// Most bytes read in total. Default [`Self::DEFAULT_MAX_TOTAL_BYTES`].
    pub fn with_max_total_bytes(mut self, n: u64) -> Self {
        self.max_total_bytes = n;
        self
    }

    /// The longest accepted line in bytes.
    pub fn max_line_bytes(&self) -> usize {
        self.max_line_bytes
    }

    /// The most bytes read in total.
    pub fn max_total_bytes(&self) -> u64 {
        self.max_total_bytes
    }
}

/// How a parser reacts to a malformed line.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ParseMode {
    /// Skip malformed lines and collect their errors. The default.
    #[default]
    Lenient,
    /// Abort on the first malformed line.
    Strict,
}

/// One malformed line of a trace.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("malformed line {line} (column {column}): {message}")]
#[non_exhaustive]
pub struct ParseError {
    /// 1-based line number in the input.
    pub line: usize,
    /// 1-based column within the line where decoding failed (0 when unknown).
    pub column: usize,
    /// What was wrong, from the JSON decoder.
    pub message: String,
}

impl ParseError {
    fn from_json(line: usize, e: &serde_json::Error) -> Self {
        // serde_json appends " at line L column C" (L counts within this one line): drop it and
        // keep the column as a field.
        let full = e.to_string();
        let position = format!(" at line {} column {}", e.line(), e.column());
        let message = full.strip_suffix(&position).unwrap_or(&full).to_string();
        Self {
            line,
            column: e.column(),
            message,
        }
    }
}

/// Why a trace could not be read.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TraceError {
    /// A malformed line in [`ParseMode::Strict`].
    #[error(transparent)]
    Parse(#[from] ParseError),
    /// A line is longer than [`ReadLimits::max_line_bytes`] (both modes abort: the rest of the
    /// line was not read, so the input is no longer aligned on lines).
    #[error("line {line} is longer than {limit} bytes (the line length limit)")]
    LineTooLong {
        /// 1-based number of the line.
        line: usize,
        /// The limit in bytes.
        limit: usize,
    },
    /// The input is longer than [`ReadLimits::max_total_bytes`] (both modes abort).
    #[error("the trace is longer than {limit} bytes (the input size limit), at line {line}")]
    TooLarge {
        /// 1-based number of the line being read when the limit was passed.
        line: usize,
        /// The limit in bytes.
        limit: u64,
    },
    /// The reader failed (both modes abort).
    #[error("reading trace line {line}: {source}")]
    Io {
        /// 1-based number of the line being read.
        line: usize,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
}

/// Per-request fields besides the block ids; each is `None` when the line lacks it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RequestMeta {
    /// Arrival time in milliseconds from the start of the trace.
    pub timestamp: Option<u64>,
    /// Prompt tokens.
    pub input_length: Option<u64>,
    /// Generated tokens.
    pub output_length: Option<u64>,
}

/// One request of a [`Trace`], borrowed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Request<'a> {
    /// Prefix block ids, root first. An id implies its whole prefix.
    pub hash_ids: &'a [u64],
    /// Optional fields of the line.
    pub meta: RequestMeta,
}

/// An ordered list of requests, each a list of prefix block ids.
///
/// # Examples
///
/// ```
/// use kvtier_replay::{ParseMode, Trace};
///
/// let text = "{\"hash_ids\": [0, 1, 2]}\nnot json\n{\"hash_ids\": [0, 3], \"timestamp\": 5}\n";
/// let parsed = Trace::parse_str(text, ParseMode::Lenient).unwrap();
/// assert_eq!(parsed.trace.len(), 2);
/// assert_eq!(parsed.errors[0].line, 2);
/// assert_eq!(parsed.trace.request(1).hash_ids, &[0, 3]);
/// assert_eq!(parsed.trace.request(1).meta.timestamp, Some(5));
///
/// assert!(Trace::parse_str(text, ParseMode::Strict).is_err());
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Trace {
    ids: Vec<u64>,
    /// `offsets[i]..offsets[i + 1]` are request `i`'s ids; always starts with 0.
    offsets: Vec<usize>,
    meta: Vec<RequestMeta>,
}

/// The result of parsing: the trace and, in lenient mode, what was skipped.
#[derive(Clone, Debug, Default)]
#[non_exhaustive]
pub struct Parsed {
    /// The well-formed requests, in input order.
    pub trace: Trace,
    /// The first [`MAX_KEPT_ERRORS`] malformed lines (empty in strict mode).
    pub errors: Vec<ParseError>,
    /// Number of malformed lines skipped (at least `errors.len()`).
    pub skipped_lines: usize,
}

/// The shape of one JSONL line; unknown fields are ignored.
#[derive(Deserialize, Serialize)]
struct Line<'a> {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    timestamp: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    input_length: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    output_length: Option<u64>,
    hash_ids: std::borrow::Cow<'a, [u64]>,
}

impl Default for Trace {
    fn default() -> Self {
        Self::new()
    }
}

impl Trace {
    /// An empty trace.
    pub fn new() -> Self {
        Self {
            ids: Vec::new(),
            offsets: vec![0],
            meta: Vec::new(),
        }
    }

    /// Appends a request.
    pub fn push(&mut self, hash_ids: &[u64], meta: RequestMeta) {
        self.ids.extend_from_slice(hash_ids);
        self.offsets.push(self.ids.len());
        self.meta.push(meta);
    }

    /// Number of requests.
    pub fn len(&self) -> usize {
        self.meta.len()
    }

    /// Whether the trace has no request.
    pub fn is_empty(&self) -> bool {
        self.meta.is_empty()
    }

    /// Request `i`.
    ///
    /// # Panics
    ///
    /// When `i >= self.len()`.
    pub fn request(&self, i: usize) -> Request<'_> {
        Request {
            hash_ids: &self.ids[self.offsets[i]..self.offsets[i + 1]],
            meta: self.meta[i],
        }
    }

    /// The requests in order.
    pub fn iter(&self) -> impl ExactSizeIterator<Item = Request<'_>> + '_ {
        (0..self.len()).map(|i| self.request(i))
    }

    /// Blocks requested over the whole trace (the denominator of a hit rate).
    pub fn total_blocks(&self) -> u64 {
        self.ids.len() as u64
    }

    /// Blocks in the longest request.
    pub fn max_request_blocks(&self) -> usize {
        self.offsets
            .windows(2)
            .map(|w| w[1] - w[0])
            .max()
            .unwrap_or(0)
    }

    /// Parses JSONL from any buffered reader (a file, stdin, a decompressor), under the
    /// default [`ReadLimits`].
    ///
    /// # Errors
    ///
    /// As [`Trace::from_reader_with_limits`].
    pub fn from_reader<R: BufRead>(reader: R, mode: ParseMode) -> Result<Parsed, TraceError> {
        Self::from_reader_with_limits(reader, mode, ReadLimits::default())
    }

    /// Parses JSONL from any buffered reader, reading no line longer than
    /// `limits.max_line_bytes()` and no more than `limits.max_total_bytes()` in all.
    ///
    /// # Errors
    ///
    /// [`TraceError::Parse`] for the first malformed line in [`ParseMode::Strict`];
    /// [`TraceError::LineTooLong`] / [`TraceError::TooLarge`] when a limit is passed;
    /// [`TraceError::Io`] when the reader fails.
    pub fn from_reader_with_limits<R: BufRead>(
        mut reader: R,
        mode: ParseMode,
        limits: ReadLimits,
    ) -> Result<Parsed, TraceError> {
        let mut out = Parsed::default();
        let mut buf = Vec::with_capacity(4096);
        let mut line = 0usize;
        let mut total = 0u64;
        // A line may take its newline on top of the limit.
        let per_line = (limits.max_line_bytes as u64).saturating_add(1);
        loop {
            buf.clear();
            line += 1;
            let n = (&mut reader)
                .take(per_line)
                .read_until(b'\n', &mut buf)
                .map_err(|source| TraceError::Io { line, source })?;
            if n == 0 {
                break;
            }
            total = total.saturating_add(n as u64);
            if total > limits.max_total_bytes {
                return Err(TraceError::TooLarge {
                    line,
                    limit: limits.max_total_bytes,
                });
            }
            let content = buf.strip_suffix(b"\n").unwrap_or(&buf);
            if content.len() > limits.max_line_bytes {
                return Err(TraceError::LineTooLong {
                    line,
                    limit: limits.max_line_bytes,
                });
            }
            out.parse_line(&buf, line, mode)?;
        }
        Ok(out)
    }

    /// Parses JSONL held in memory (for example an embedded trace).
    ///
    /// # Errors
    ///
    /// [`TraceError::Parse`] for the first malformed line in [`ParseMode::Strict`].
    pub fn parse_slice(bytes: &[u8], mode: ParseMode) -> Result<Parsed, TraceError> {
        let mut out = Parsed::default();
        // Roughly 24 bytes of JSON per id on Mooncake traces; a good first guess.
        out.trace.ids.reserve(bytes.len() / 8);
        for (i, line) in bytes.split(|&b| b == b'\n').enumerate() {
            out.parse_line(line, i + 1, mode)?;
        }
        Ok(out)
    }

    /// Parses JSONL held in a string. See [`Trace::parse_slice`].
    ///
    /// # Errors
    ///
    /// As [`Trace::parse_slice`].
    pub fn parse_str(text: &str, mode: ParseMode) -> Result<Parsed, TraceError> {
        Self::parse_slice(text.as_bytes(), mode)
    }

    /// Writes the trace as Mooncake JSONL (fields that are `None` are omitted).
    ///
    /// # Errors
    ///
    /// Any error of the writer.
    pub fn write_jsonl<W: Write>(&self, mut w: W) -> std::io::Result<()> {
        for r in self.iter() {
            let line = Line {
                timestamp: r.meta.timestamp,
                input_length: r.meta.input_length,
                output_length: r.meta.output_length,
                hash_ids: std::borrow::Cow::Borrowed(r.hash_ids),
            };
            serde_json::to_writer(&mut w, &line)?;
            w.write_all(b"\n")?;
        }
        Ok(())
    }
}

impl Parsed {
    fn parse_line(&mut self, raw: &[u8], line: usize, mode: ParseMode) -> Result<(), TraceError> {
        if raw.iter().all(u8::is_ascii_whitespace) {
            return Ok(());
        }
        match serde_json::from_slice::<Line<'_>>(raw) {
            Ok(l) => {
                self.trace.push(
                    &l.hash_ids,
                    RequestMeta {
                        timestamp: l.timestamp,
                        input_length: l.input_length,
                        output_length: l.output_length,
                    },
                );
                Ok(())
            }
            Err(e) => {
                let err = ParseError::from_json(line, &e);
                match mode {
                    ParseMode::Strict => Err(TraceError::Parse(err)),
                    ParseMode::Lenient => {
                        self.skipped_lines += 1;
                        if self.errors.len() < MAX_KEPT_ERRORS {
                            self.errors.push(err);
                        }
                        Ok(())
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = concat!(
        "{\"timestamp\": 0, \"input_length\": 10, \"output_length\": 2, \"hash_ids\": [0, 1]}\n",
        "\n",
        "{\"hash_ids\": [0, 1, \"x\"]}\n",
        "{\"hash_ids\": [0, 2], \"extra\": true}\n",
        "{\"timestamp\": 3}\n",
        "{\"hash_ids\": [0, 2, 4]",
    );

    #[test]
    fn lenient_skips_bad_lines_and_reports_line_numbers() {
        let p = Trace::parse_str(TEXT, ParseMode::Lenient).unwrap();
        assert_eq!(p.trace.len(), 2);
        assert_eq!(p.trace.request(0).hash_ids, &[0, 1]);
        assert_eq!(p.trace.request(0).meta.input_length, Some(10));
        assert_eq!(p.trace.request(1).hash_ids, &[0, 2]);
        assert_eq!(p.trace.request(1).meta, RequestMeta::default());
        let lines: Vec<usize> = p.errors.iter().map(|e| e.line).collect();
        assert_eq!(lines, [3, 5, 6]);
        assert_eq!(p.skipped_lines, 3);
        assert!(p.errors[1].message.contains("hash_ids"), "{}", p.errors[1]);
        assert!(
            p.errors
                .iter()
                .all(|e| e.column > 0 && !e.message.contains(" at line "))
        );
        assert!(
            p.errors[0]
                .to_string()
                .starts_with("malformed line 3 (column ")
        );
    }

    #[test]
    fn strict_aborts_on_first_bad_line() {
        let err = Trace::parse_str(TEXT, ParseMode::Strict).unwrap_err();
        match err {
            TraceError::Parse(e) => assert_eq!(e.line, 3),
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn reader_and_slice_agree() {
        let a = Trace::parse_str(TEXT, ParseMode::Lenient).unwrap();
        let b = Trace::from_reader(std::io::Cursor::new(TEXT), ParseMode::Lenient).unwrap();
        assert_eq!(a.trace, b.trace);
        assert_eq!(a.errors, b.errors);
        let err = Trace::from_reader(std::io::Cursor::new(TEXT), ParseMode::Strict).unwrap_err();
        assert!(matches!(err, TraceError::Parse(ParseError { line: 3, .. })));
    }

    #[test]
    fn invalid_utf8_is_a_line_error() {
        let bytes = b"{\"hash_ids\": [1]}\n\xff\xfe\n{\"hash_ids\": [2]}\n";
        let p = Trace::parse_slice(bytes, ParseMode::Lenient).unwrap();
        assert_eq!(p.trace.len(), 2);
        assert_eq!(p.errors[0].line, 2);
    }

    #[test]
    fn write_then_read_round_trips() {
        let p = Trace::parse_str(TEXT, ParseMode::Lenient).unwrap();
        let mut out = Vec::new();
        p.trace.write_jsonl(&mut out).unwrap();
        let q = Trace::parse_slice(&out, ParseMode::Strict).unwrap();
        assert_eq!(p.trace, q.trace);
    }

    #[test]
    fn line_and_total_limits_end_the_read() {
        let text = "{\"hash_ids\": [1]}\n{\"hash_ids\": [1, 2, 3, 4]}\n";
        let exact = ReadLimits::default().with_max_line_bytes(17);
        let p = Trace::from_reader_with_limits(text.as_bytes(), ParseMode::Strict, exact);
        assert!(
            matches!(p, Err(TraceError::LineTooLong { line: 2, limit: 17 })),
            "{p:?}"
        );
        let wide = ReadLimits::default().with_max_line_bytes(26);
        let p = Trace::from_reader_with_limits(text.as_bytes(), ParseMode::Strict, wide).unwrap();
        assert_eq!(p.trace.len(), 2, "a line of exactly the limit is read");
        let small = ReadLimits::default().with_max_total_bytes(20);
        let err = Trace::from_reader_with_limits(text.as_bytes(), ParseMode::Lenient, small);
        assert!(
            matches!(err, Err(TraceError::TooLarge { line: 2, limit: 20 })),
            "{err:?}"
        );
        let d = ReadLimits::default();
        assert_eq!(d.max_line_bytes(), 16 << 20);
        assert_eq!(d.max_total_bytes(), 1 << 30);
    }

    #[test]
    fn kept_errors_are_capped() {
        let text = "x\n".repeat(MAX_KEPT_ERRORS + 5);
        let p = Trace::parse_str(&text, ParseMode::Lenient).unwrap();
        assert_eq!(p.errors.len(), MAX_KEPT_ERRORS);
        assert_eq!(p.skipped_lines, MAX_KEPT_ERRORS + 5);
    }
}
