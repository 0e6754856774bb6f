//! Incremental parsing of client commands: multibulk arrays of bulk strings (what every client
//! library and redis-benchmark send) and inline commands (what `redis-cli` piping, telnet and
//! `nc` may send), as redis-server reads them.
//!
//! The parser is restartable: given the bytes received so far it returns one command and the
//! bytes it used, or `None` when the command is not complete yet (call again with more).
//! Every length is checked against [`RespLimits`] as soon as it is read, so a client cannot
//! make the server buffer more than one command's limit; arguments are allocated as they are
//! found in the buffer, never from a declared count.

use std::borrow::Cow;

use super::{Arg, RespError, RespLimits};

/// Longest `*<n>` or `$<n>` line accepted (sign, 20 digits, CRLF, slack).
const MAX_LENGTH_LINE: usize = 32;

/// One parsed command: its arguments (name first) and the bytes it took from the buffer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Parsed<'a> {
    /// The arguments, name first; borrowed from the buffer except inline arguments with
    /// escapes.
    pub args: Vec<Arg<'a>>,
    /// Bytes of the buffer this command used (drop them before parsing the next).
    pub consumed: usize,
}

/// Parses the first command in `buf`.
///
/// Empty commands (`*0\r\n`, `*-1\r\n`, blank inline lines) are skipped, as redis-server
/// does; their bytes count in `consumed` of the next command.
///
/// # Errors
///
/// A [`RespError`] for bytes that are not a command or that break `limits`; the connection
/// should get [`RespError::reply_text`] as an error reply and close.
///
/// # Examples
///
/// ```
/// use kvtier_proto::resp::{parse_command, RespLimits};
/// let limits = RespLimits::default();
/// let buf = b"*2\r\n$3\r\nGET\r\n$1\r\nk\r\nPING\r\n";
/// let first = parse_command(buf, &limits)?.expect("complete");
/// assert_eq!(first.args, [&b"GET"[..], b"k"]);
/// let second = parse_command(&buf[first.consumed..], &limits)?.expect("inline");
/// assert_eq!(second.args, [&b"PING"[..]]);
/// assert_eq!(parse_command(&buf[..10], &limits)?, None); // incomplete
/// # Ok::<(), kvtier_proto::resp::RespError>(())
/// ```
pub fn parse_command<'a>(
    buf: &'a [u8],
    limits: &RespLimits,
) -> Result<Option<Parsed<'a>>, RespError> {
    let mut args = Vec::new();
    Ok(parse_command_into(buf, limits, &mut args)?.map(|consumed| Parsed { args, consumed }))
}

/// [`parse_command`] into a caller's vector, so that a connection parsing a pipeline out of
/// one buffer reuses one allocation for every command's arguments. `args` is cleared first;
/// on `Ok(Some(consumed))` it holds the command (never empty), otherwise it is left empty.
///
/// # Errors
///
/// As [`parse_command`].
///
/// # Examples
///
/// ```
/// use kvtier_proto::resp::{parse_command_into, Command, RespLimits};
/// let buf = b"*2\r\n$3\r\nGET\r\n$1\r\na\r\n*2\r\n$3\r\nGET\r\n$1\r\nb\r\n";
/// let (mut offset, mut args, mut keys) = (0, Vec::new(), Vec::new());
/// while let Some(used) = parse_command_into(&buf[offset..], &RespLimits::default(), &mut args)? {
///     offset += used;
///     if let Ok(Command::Get(key)) = Command::from_args(&args) {
///         keys.push(key.to_vec());
///     }
/// }
/// assert_eq!(keys, [b"a".to_vec(), b"b".to_vec()]);
/// # Ok::<(), kvtier_proto::resp::RespError>(())
/// ```
pub fn parse_command_into<'a>(
    buf: &'a [u8],
    limits: &RespLimits,
    args: &mut Vec<Arg<'a>>,
) -> Result<Option<usize>, RespError> {
    args.clear();
    let mut offset = 0;
    loop {
        let rest = buf.get(offset..).unwrap_or_default();
        let Some(&first) = rest.first() else {
            return Ok(None);
        };
        let step = if first == b'*' {
            parse_multibulk(rest, limits, args)
        } else {
            parse_inline(rest, limits, args)
        };
        match step {
            Ok(Some(used)) => {
                offset += used;
                if !args.is_empty() {
                    return Ok(Some(offset));
                }
            }
            Ok(None) => {
                args.clear();
                return Ok(None);
            }
            Err(e) => {
                args.clear();
                return Err(e);
            }
        }
    }
}

/// Length of the first command in `buf` as soon as it can be known: the whole command's bytes,
/// possibly more than `buf` holds yet (a multibulk command's length is known once the last
/// bulk's `$len` line is in, before its payload), `None` while it cannot be told. An empty
/// command (`*0`, `*-1`, a blank inline line) is a command of its own here.
///
/// This is what a server's framer needs: it sizes the buffer for a large SET before the
/// value arrives, and it checks every length against `limits` without buffering the payload.
///
/// # Errors
///
/// As [`parse_command`], for the bytes seen so far.
///
/// # Examples
///
/// ```
/// use kvtier_proto::resp::{command_len, RespLimits};
/// let limits = RespLimits::default();
/// let set = b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$5\r\nvalue\r\n";
/// assert_eq!(command_len(&set[..20], &limits)?, None); // the value's length is not in yet
/// assert_eq!(command_len(&set[..26], &limits)?, Some(set.len())); // known before the value
/// assert_eq!(command_len(b"PING\r\nPING\r\n", &limits)?, Some(6));
/// # Ok::<(), kvtier_proto::resp::RespError>(())
/// ```
pub fn command_len(buf: &[u8], limits: &RespLimits) -> Result<Option<usize>, RespError> {
    let Some(&first) = buf.first() else {
        return Ok(None);
    };
    if first != b'*' {
        return Ok(inline_line_end(buf, limits)?.map(|nl| nl + 1));
    }
    let Some((mut pos, count)) = array_header(buf, limits)? else {
        return Ok(None);
    };
    for i in 0..count {
        let rest = buf.get(pos..).unwrap_or_default();
        let Some((header, len)) = bulk_header(rest, limits)? else {
            return Ok(None);
        };
        // Within max_bulk_len, so no overflow: header + payload + CRLF.
        let end = (pos + header).saturating_add(len).saturating_add(2);
        if i + 1 == count {
            return Ok(Some(end));
        }
        if buf.len() < end {
            return Ok(None);
        }
        if buf.get(end - 2..end) != Some(b"\r\n") {
            return Err(RespError::MissingCrlf);
        }
        pos = end;
    }
    Ok(Some(pos))
}

/// A multibulk command's `*<count>` line at the start of `buf`: `Some((its bytes, count))`,
/// a count of 0 for an empty command (`*0`, `*-1`).
fn array_header(buf: &[u8], limits: &RespLimits) -> Result<Option<(usize, usize)>, RespError> {
    let Some(eol) =
        find_crlf(buf, MAX_LENGTH_LINE).map_err(|()| RespError::InvalidMultibulkLength)?
    else {
        return Ok(None);
    };
    let count =
        parse_i64(buf.get(1..eol).unwrap_or_default()).ok_or(RespError::InvalidMultibulkLength)?;
    if count <= 0 {
        return Ok(Some((eol + 2, 0)));
    }
    if count as u64 > limits.max_array_len as u64 {
        return Err(RespError::ArrayTooLong {
            len: count as u64,
            max: limits.max_array_len,
        });
    }
    Ok(Some((eol + 2, count as usize)))
}

/// A bulk's `$<len>` line at the start of `rest`: `Some((its bytes, len))`.
fn bulk_header(rest: &[u8], limits: &RespLimits) -> Result<Option<(usize, usize)>, RespError> {
    let Some(&marker) = rest.first() else {
        return Ok(None);
    };
    if marker != b'$' {
        return Err(RespError::ExpectedBulk { got: marker });
    }
    let Some(eol) = find_crlf(rest, MAX_LENGTH_LINE).map_err(|()| RespError::InvalidBulkLength)?
    else {
        return Ok(None);
    };
    let len = parse_i64(rest.get(1..eol).unwrap_or_default())
        .filter(|l| *l >= 0)
        .ok_or(RespError::InvalidBulkLength)?;
    if len as u64 > limits.max_bulk_len as u64 {
        return Err(RespError::BulkTooLong {
            len: len as u64,
            max: limits.max_bulk_len,
        });
    }
    let len = usize::try_from(len).map_err(|_| RespError::InvalidBulkLength)?;
    Ok(Some((eol + 2, len)))
}

/// Where an inline command's line ends (its `\n`), within [`RespLimits::max_inline_len`].
fn inline_line_end(buf: &[u8], limits: &RespLimits) -> Result<Option<usize>, RespError> {
    match buf
        .iter()
        .take(limits.max_inline_len.saturating_add(1))
        .position(|&b| b == b'\n')
    {
        Some(nl) => Ok(Some(nl)),
        None if buf.len() > limits.max_inline_len => Err(RespError::InlineTooLong {
            max: limits.max_inline_len,
        }),
        None => Ok(None),
    }
}

/// Finds `\r\n` within the first `max` bytes: `Ok(Some(end of line before CR))`, `Ok(None)`
/// if not there yet, `Err(())` if `max` bytes came without it.
fn find_crlf(buf: &[u8], max: usize) -> Result<Option<usize>, ()> {
    match buf.iter().take(max).position(|&b| b == b'\r') {
        Some(i) => match buf.get(i + 1) {
            None => Ok(None),
            Some(b'\n') => Ok(Some(i)),
            Some(_) => Err(()),
        },
        None if buf.len() >= max => Err(()),
        None => Ok(None),
    }
}

/// Parses a decimal integer as redis' `string2ll` does: optional `-`, digits, no leading
/// zeros, no `+`, no spaces, in range.
pub(crate) fn parse_i64(bytes: &[u8]) -> Option<i64> {
    let (negative, digits) = match bytes.split_first() {
        Some((b'-', rest)) => (true, rest),
        _ => (false, bytes),
    };
    if digits.is_empty()
        || digits.len() > 19
        || (digits.len() > 1 && digits.first() == Some(&b'0'))
        || (negative && digits == b"0")
    {
        return None;
    }
    // Accumulated negatively, so that i64::MIN parses too.
    let mut value: i64 = 0;
    for &d in digits {
        if !d.is_ascii_digit() {
            return None;
        }
        value = value.checked_mul(10)?.checked_sub(i64::from(d - b'0'))?;
    }
    if negative {
        Some(value)
    } else {
        value.checked_neg()
    }
}

/// Appends one multibulk command's arguments to `args`; `Some(bytes used)` when complete.
fn parse_multibulk<'a>(
    buf: &'a [u8],
    limits: &RespLimits,
    args: &mut Vec<Arg<'a>>,
) -> Result<Option<usize>, RespError> {
    let Some((mut pos, count)) = array_header(buf, limits)? else {
        return Ok(None);
    };
    for _ in 0..count {
        let rest = buf.get(pos..).unwrap_or_default();
        let Some((start, len)) = bulk_header(rest, limits)? else {
            return Ok(None);
        };
        let end = start
            .checked_add(len)
            .filter(|e| e.checked_add(2).is_some())
            .ok_or(RespError::InvalidBulkLength)?;
        let Some(data) = rest.get(start..end) else {
            return Ok(None);
        };
        match rest.get(end..end + 2) {
            None if rest.len() < end + 2 => return Ok(None),
            Some(b"\r\n") => {}
            _ => return Err(RespError::MissingCrlf),
        }
        args.push(Cow::Borrowed(data));
        pos += end + 2;
    }
    Ok(Some(pos))
}

/// Appends one inline command's arguments to `args`; `Some(bytes used)` when complete.
fn parse_inline<'a>(
    buf: &'a [u8],
    limits: &RespLimits,
    args: &mut Vec<Arg<'a>>,
) -> Result<Option<usize>, RespError> {
    let Some(nl) = inline_line_end(buf, limits)? else {
        return Ok(None);
    };
    let mut line = buf.get(..nl).unwrap_or_default();
    if let Some(stripped) = line.strip_suffix(b"\r") {
        line = stripped;
    }
    split_args(line, args)?;
    if args.len() > limits.max_array_len {
        return Err(RespError::ArrayTooLong {
            len: args.len() as u64,
            max: limits.max_array_len,
        });
    }
    Ok(Some(nl + 1))
}

fn hex(b: u8) -> Option<u8> {
    (b as char).to_digit(16).map(|d| d as u8)
}

/// Splits an inline line into arguments with redis' `sdssplitargs` rules: whitespace
/// separates; `"..."` understands `\n \r \t \b \a \\ \" \xHH`; `'...'` understands `\'`; a
/// closing quote must be followed by whitespace or the end.
fn split_args<'a>(line: &'a [u8], args: &mut Vec<Arg<'a>>) -> Result<(), RespError> {
    let mut i = 0;
    let n = line.len();
    loop {
        while i < n && line.get(i).is_some_and(|b| b.is_ascii_whitespace()) {
            i += 1;
        }
        if i >= n {
            return Ok(());
        }
        let quote = line.get(i).copied().filter(|b| *b == b'"' || *b == b'\'');
        let Some(q) = quote else {
            let start = i;
            while i < n && !line.get(i).is_some_and(|b| b.is_ascii_whitespace()) {
                i += 1;
            }
            args.push(Cow::Borrowed(line.get(start..i).unwrap_or_default()));
            continue;
        };
        i += 1;
        let mut arg = Vec::new();
        loop {
            let Some(&c) = line.get(i) else {
                return Err(RespError::UnbalancedQuotes);
            };
            if c == q {
                i += 1;
                if line.get(i).is_some_and(|b| !b.is_ascii_whitespace()) {
                    return Err(RespError::UnbalancedQuotes);
                }
                break;
            }
            if c == b'\\' && q == b'"' {
                let next = line.get(i + 1).copied();
                if next == Some(b'x')
                    && let (Some(h), Some(l)) = (
                        line.get(i + 2).copied().and_then(hex),
                        line.get(i + 3).copied().and_then(hex),
                    )
                {
                    arg.push(h * 16 + l);
                    i += 4;
                    continue;
                }
                if let Some(e) = next {
                    arg.push(match e {
                        b'n' => b'\n',
                        b'r' => b'\r',
                        b't' => b'\t',
                        b'b' => 8,
                        b'a' => 7,
                        other => other,
                    });
                    i += 2;
                    continue;
                }
            } else if c == b'\\' && q == b'\'' && line.get(i + 1) == Some(&b'\'') {
                arg.push(b'\'');
                i += 2;
                continue;
            }
            arg.push(c);
            i += 1;
        }
        args.push(Cow::Owned(arg));
    }
}

#[cfg(test)]
mod tests {
    use super::parse_i64;

    #[test]
    fn integers_parse_as_redis_string2ll_does() {
        for ok in [
            "0",
            "7",
            "-7",
            "1234567890",
            "9223372036854775807",
            "-9223372036854775808",
        ] {
            assert_eq!(parse_i64(ok.as_bytes()), ok.parse().ok(), "{ok}");
        }
        for bad in [
            "",
            "-",
            "-0",
            "01",
            "+1",
            " 1",
            "1 ",
            "1a",
            "9223372036854775808",
            "-9223372036854775809",
            "99999999999999999999",
        ] {
            assert_eq!(parse_i64(bad.as_bytes()), None, "{bad}");
        }
    }
}
