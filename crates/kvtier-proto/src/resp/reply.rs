//! Encoding RESP2 replies into a [`WriteBuf`]: type prefixes, lengths and CRLFs go to the
//! metadata buffer; bulk payloads of 64 bytes and more are borrowed, so a GET of a large value
//! is written straight from where it is stored.

use std::borrow::Cow;

use super::{Arg, Hello, glob_match};
use crate::WriteBuf;

/// A reply value.
///
/// # Examples
///
/// ```
/// use kvtier_proto::WriteBuf;
/// use kvtier_proto::resp::Reply;
///
/// let value = vec![b'x'; 1000];
/// let mut out = WriteBuf::new();
/// Reply::Array(vec![Reply::Bulk(&value), Reply::Null, Reply::Integer(-3)]).encode(&mut out);
/// let bytes = out.to_vec();
/// assert!(bytes.starts_with(b"*3\r\n$1000\r\nxxx"));
/// assert!(bytes.ends_with(b"\r\n$-1\r\n:-3\r\n"));
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reply<'a> {
    /// `+text` (CR and LF are replaced by spaces).
    Simple(Cow<'a, str>),
    /// `-text`, e.g. `ERR syntax error` (CR and LF are replaced by spaces).
    Error(Cow<'a, str>),
    /// `:n`.
    Integer(i64),
    /// `$len` + bytes.
    Bulk(&'a [u8]),
    /// `$-1`: no value (GET of a missing key).
    Null,
    /// `*-1`.
    NullArray,
    /// `*n` + the elements.
    Array(Vec<Reply<'a>>),
}

impl<'a> Reply<'a> {
    /// `+OK`.
    pub const OK: Reply<'static> = Reply::Simple(Cow::Borrowed("OK"));
    /// `+PONG`.
    pub const PONG: Reply<'static> = Reply::Simple(Cow::Borrowed("PONG"));

    /// Appends the reply to `out`.
    pub fn encode(&self, out: &mut WriteBuf<'a>) {
        match self {
            Reply::Simple(s) => line(out, b'+', s.as_bytes()),
            Reply::Error(s) => line(out, b'-', s.as_bytes()),
            Reply::Integer(n) => write_integer(out, *n),
            Reply::Bulk(b) => write_bulk(out, b),
            Reply::Null => out.push_meta(b"$-1\r\n"),
            Reply::NullArray => out.push_meta(b"*-1\r\n"),
            Reply::Array(items) => {
                write_array_len(out, items.len());
                for item in items {
                    item.encode(out);
                }
            }
        }
    }
}

fn line(out: &mut WriteBuf<'_>, prefix: u8, text: &[u8]) {
    let mut v = Vec::with_capacity(text.len() + 3);
    v.push(prefix);
    v.extend(
        text.iter()
            .map(|&b| if b == b'\r' || b == b'\n' { b' ' } else { b }),
    );
    v.extend_from_slice(b"\r\n");
    out.push_meta(&v);
}

fn number_line(out: &mut WriteBuf<'_>, prefix: u8, n: i64) {
    let mut v = [0u8; 24];
    v[0] = prefix;
    let digits = n.to_string();
    let len = digits.len();
    v[1..1 + len].copy_from_slice(digits.as_bytes());
    v[1 + len..3 + len].copy_from_slice(b"\r\n");
    out.push_meta(&v[..3 + len]);
}

/// Appends `:n\r\n`.
pub fn write_integer(out: &mut WriteBuf<'_>, n: i64) {
    number_line(out, b':', n);
}

/// Appends `*len\r\n`: the header of an array whose `len` elements the caller writes next
/// (for MGET, without building a `Vec<Reply>`).
pub fn write_array_len(out: &mut WriteBuf<'_>, len: usize) {
    number_line(out, b'*', i64::try_from(len).unwrap_or(i64::MAX));
}

/// Appends a bulk string; the payload is borrowed (copied only when under 64 bytes).
pub fn write_bulk<'a>(out: &mut WriteBuf<'a>, bytes: &'a [u8]) {
    number_line(out, b'$', i64::try_from(bytes.len()).unwrap_or(i64::MAX));
    out.push_borrowed(bytes);
    out.push_meta(b"\r\n");
}

/// SCAN's reply: the next cursor (0 when the iteration is complete) and a page of keys.
///
/// # Examples
///
/// ```
/// use kvtier_proto::WriteBuf;
/// use kvtier_proto::resp::scan_reply;
/// let keys: [&[u8]; 2] = [b"a", b"b"];
/// let mut out = WriteBuf::new();
/// scan_reply(&mut out, 0, keys);
/// assert_eq!(out.to_vec(), b"*2\r\n$1\r\n0\r\n*2\r\n$1\r\na\r\n$1\r\nb\r\n");
/// ```
pub fn scan_reply<'a, I>(out: &mut WriteBuf<'a>, next_cursor: u64, keys: I)
where
    I: IntoIterator<Item = &'a [u8]>,
    I::IntoIter: ExactSizeIterator,
{
    let keys = keys.into_iter();
    write_array_len(out, 2);
    let cursor = next_cursor.to_string();
    number_line(out, b'$', cursor.len() as i64);
    out.push_meta(cursor.as_bytes());
    out.push_meta(b"\r\n");
    write_array_len(out, keys.len());
    for k in keys {
        write_bulk(out, k);
    }
}

/// What `CONFIG GET` reports when the server has no setting of its own: what redis-benchmark
/// and client libraries look at on connect (`save` and `appendonly`: no persistence of the
/// RESP namespace is implied).
pub const DEFAULT_CONFIG: &[(&str, &str)] = &[("save", ""), ("appendonly", "no")];

/// `CONFIG GET` reply as redis-server 7 gives it: a flat array of name, value pairs for every
/// setting in `config` whose name matches one of the (glob) `params`, each once.
///
/// # Examples
///
/// ```
/// use kvtier_proto::resp::{config_get_reply, Reply, DEFAULT_CONFIG};
/// let reply = config_get_reply(&[b"save"[..].into()], DEFAULT_CONFIG);
/// assert_eq!(reply, Reply::Array(vec![Reply::Bulk(b"save"), Reply::Bulk(b"")]));
/// ```
pub fn config_get_reply<'a>(params: &[Arg<'_>], config: &'a [(&'a str, &'a str)]) -> Reply<'a> {
    let mut items = Vec::new();
    for (name, value) in config {
        if params
            .iter()
            .any(|p| glob_match(&p.to_ascii_lowercase(), name.as_bytes()))
        {
            items.push(Reply::Bulk(name.as_bytes()));
            items.push(Reply::Bulk(value.as_bytes()));
        }
    }
    Reply::Array(items)
}

/// The answer to `HELLO`, as redis-server 7 gives it over RESP2: for no version or version 2,
/// the server's properties as a flat array of name/value pairs; for any other version, the
/// error text `NOPROTO sorry, this protocol version is not supported` (RESP3 is not spoken;
/// clients such as redis-py 8 then continue in RESP2).
///
/// # Errors
///
/// The `NOPROTO` error text, to send as [`Reply::Error`].
///
/// # Examples
///
/// ```
/// use kvtier_proto::resp::{hello_reply, Hello, Reply};
/// let v3 = Hello { protover: Some(3), auth: None, setname: None };
/// assert!(hello_reply(&v3, "kvtier", "0.1.0", 7).unwrap_err().starts_with("NOPROTO"));
/// let v2 = Hello { protover: Some(2), ..v3 };
/// let Ok(Reply::Array(fields)) = hello_reply(&v2, "kvtier", "0.1.0", 7) else { panic!() };
/// assert_eq!(fields[5], Reply::Integer(2));
/// ```
pub fn hello_reply<'a>(
    hello: &Hello<'_>,
    server: &'a str,
    version: &'a str,
    client_id: i64,
) -> Result<Reply<'a>, &'static str> {
    match hello.protover {
        None | Some(2) => Ok(Reply::Array(vec![
            Reply::Bulk(b"server"),
            Reply::Bulk(server.as_bytes()),
            Reply::Bulk(b"version"),
            Reply::Bulk(version.as_bytes()),
            Reply::Bulk(b"proto"),
            Reply::Integer(2),
            Reply::Bulk(b"id"),
            Reply::Integer(client_id),
            Reply::Bulk(b"mode"),
            Reply::Bulk(b"standalone"),
            Reply::Bulk(b"role"),
            Reply::Bulk(b"master"),
            Reply::Bulk(b"modules"),
            Reply::Array(Vec::new()),
        ])),
        Some(_) => Err("NOPROTO sorry, this protocol version is not supported"),
    }
}
