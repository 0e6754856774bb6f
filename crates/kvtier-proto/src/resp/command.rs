//! Recognising the commands kvtier's Redis-compatible port serves, with redis-server's
//! argument rules and error texts.
//!
//! [`Command::from_args`] turns parsed arguments into a [`Command`]; a wrong argument is a
//! [`CommandError`] whose [`CommandError::reply_text`] is the error reply redis-server would
//! send (the connection stays open).

use super::Arg;
use super::parse::parse_i64;

/// SET's expiry option.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Expiry {
    /// `EX seconds` (> 0).
    Ex(u64),
    /// `PX milliseconds` (> 0).
    Px(u64),
    /// `EXAT unix-seconds` (> 0).
    ExAt(u64),
    /// `PXAT unix-milliseconds` (> 0).
    PxAt(u64),
    /// `KEEPTTL`: keep the key's current expiry.
    KeepTtl,
}

/// SET's condition option.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SetCondition {
    /// `NX`: only if the key does not exist.
    Nx,
    /// `XX`: only if the key exists.
    Xx,
}

/// `SET key value [NX | XX] [GET] [EX s | PX ms | EXAT t | PXAT t | KEEPTTL]`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Set<'a> {
    /// The key.
    pub key: &'a [u8],
    /// The value.
    pub value: &'a [u8],
    /// NX / XX.
    pub condition: Option<SetCondition>,
    /// GET: reply with the old value.
    pub get: bool,
    /// EX / PX / EXAT / PXAT / KEEPTTL.
    pub expiry: Option<Expiry>,
}

/// `SCAN cursor [MATCH pattern] [COUNT n] [TYPE type]`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Scan<'a> {
    /// Where to continue (0 starts a new iteration).
    pub cursor: u64,
    /// A glob ([`super::glob_match`]); `None` matches every key.
    pub pattern: Option<&'a [u8]>,
    /// Hint of how many keys to look at (>= 1); `None` for the default (10 in redis).
    pub count: Option<u64>,
    /// TYPE filter (kvtier holds only strings).
    pub key_type: Option<&'a [u8]>,
}

/// `CLIENT` subcommands that clients send at connect.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ClientCommand<'a> {
    /// `CLIENT SETNAME name` (reply `+OK`).
    SetName(&'a [u8]),
    /// `CLIENT GETNAME` (bulk name or null).
    GetName,
    /// `CLIENT SETINFO attr value` (redis-py 5 sends LIB-NAME and LIB-VER; reply `+OK`).
    SetInfo {
        /// LIB-NAME or LIB-VER.
        attr: &'a [u8],
        /// Its value.
        value: &'a [u8],
    },
    /// `CLIENT ID` (integer).
    Id,
}

/// `COMMAND` introspection, which `redis-cli` sends at start (`COMMAND DOCS`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum CommandInfo {
    /// `COMMAND`: details of every command (an empty array is enough for clients).
    List,
    /// `COMMAND COUNT`.
    Count,
    /// `COMMAND DOCS [name ...]` (an empty array is enough for clients).
    Docs,
}

/// `HELLO [protover [AUTH username password] [SETNAME name]]`: redis-py 8 opens with
/// `HELLO 3` and falls back to RESP2 on `-NOPROTO` (see [`super::hello_reply`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Hello<'a> {
    /// The protocol version asked for (`None`: keep the current one).
    pub protover: Option<i64>,
    /// `AUTH username password`.
    pub auth: Option<(&'a [u8], &'a [u8])>,
    /// `SETNAME name`.
    pub setname: Option<&'a [u8]>,
}

/// A recognised command, borrowing its arguments.
///
/// # Examples
///
/// ```
/// use kvtier_proto::resp::{parse_command, Command, Expiry, RespLimits, SetCondition};
/// let parsed = parse_command(b"SET k v px 1500 NX\r\n", &RespLimits::default())?.unwrap();
/// let Command::Set(set) = Command::from_args(&parsed.args).unwrap() else { panic!() };
/// assert_eq!((set.key, set.value), (&b"k"[..], &b"v"[..]));
/// assert_eq!(set.expiry, Some(Expiry::Px(1500)));
/// assert_eq!(set.condition, Some(SetCondition::Nx));
/// # Ok::<(), kvtier_proto::resp::RespError>(())
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Command<'a> {
    /// `PING [message]`: `+PONG`, or the message as a bulk.
    Ping(Option<&'a [u8]>),
    /// `ECHO message`.
    Echo(&'a [u8]),
    /// `GET key`.
    Get(&'a [u8]),
    /// `SET key value [options]`.
    Set(Set<'a>),
    /// `MGET key [key ...]`.
    MGet(&'a [Arg<'a>]),
    /// `EXISTS key [key ...]`: how many of the keys exist (repeats count again).
    Exists(&'a [Arg<'a>]),
    /// `DEL key [key ...]`: how many were removed.
    Del(&'a [Arg<'a>]),
    /// `SCAN cursor [MATCH p] [COUNT n] [TYPE t]`.
    Scan(Scan<'a>),
    /// `INFO [section ...]`.
    Info(&'a [Arg<'a>]),
    /// `DBSIZE`.
    DbSize,
    /// `SELECT db` (only 0 exists).
    Select(i64),
    /// `QUIT`: reply `+OK` and close.
    Quit,
    /// `CONFIG GET parameter [parameter ...]` (globs).
    ConfigGet(&'a [Arg<'a>]),
    /// `CLIENT ...`.
    Client(ClientCommand<'a>),
    /// `COMMAND ...`.
    Command(CommandInfo),
    /// `HELLO ...`.
    Hello(Hello<'a>),
}

/// A command that cannot be run; the connection stays open.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CommandError {
    /// Not a command kvtier serves.
    #[error("unknown command '{name}'")]
    Unknown {
        /// The name, lossily as text.
        name: String,
        /// The first arguments, for the error text.
        args: Vec<String>,
    },
    /// A subcommand that is not served.
    #[error("unknown subcommand '{sub}' of {command}")]
    UnknownSubcommand {
        /// The command (upper case).
        command: &'static str,
        /// The subcommand, lossily as text.
        sub: String,
    },
    /// Wrong number of arguments.
    #[error("wrong number of arguments for '{command}'")]
    WrongArity {
        /// The command, lower case as redis writes it.
        command: &'static str,
    },
    /// Options that do not parse or do not go together.
    #[error("syntax error")]
    Syntax,
    /// An argument that should be an integer.
    #[error("value is not an integer or out of range")]
    NotInteger,
    /// SET's expiry is not a positive integer.
    #[error("invalid expire time in 'set' command")]
    InvalidExpire,
    /// SCAN's cursor is not an unsigned integer.
    #[error("invalid cursor")]
    InvalidCursor,
    /// HELLO's protocol version is not an integer.
    #[error("Protocol version is not an integer or out of range")]
    BadProtocolVersion,
    /// SELECT of a database other than 0.
    #[error("DB index is out of range")]
    DbOutOfRange,
}

impl CommandError {
    /// The error reply redis-server sends in this case (without the leading `-`).
    ///
    /// # Examples
    ///
    /// ```
    /// use kvtier_proto::resp::{Command, CommandError};
    /// let err = Command::from_args(&[b"GET"[..].into()]).unwrap_err();
    /// assert_eq!(err.reply_text(), "ERR wrong number of arguments for 'get' command");
    /// ```
    pub fn reply_text(&self) -> String {
        match self {
            CommandError::Unknown { name, args } => {
                let mut s = format!("ERR unknown command '{name}', with args beginning with: ");
                for a in args {
                    s.push('\'');
                    s.push_str(a);
                    s.push_str("' ");
                }
                s
            }
            CommandError::UnknownSubcommand { command, sub } => {
                format!("ERR unknown subcommand '{sub}'. Try {command} HELP.")
            }
            CommandError::WrongArity { command } => {
                format!("ERR wrong number of arguments for '{command}' command")
            }
            other => format!("ERR {other}"),
        }
    }
}

fn text(bytes: &[u8]) -> String {
    // Error texts are single-line: control characters would break the reply.
    String::from_utf8_lossy(bytes)
        .chars()
        .take(128)
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

impl<'a> Command<'a> {
    /// Recognises a command from its arguments (name first, any case).
    ///
    /// # Errors
    ///
    /// A [`CommandError`] for unknown commands, wrong arity and bad options, with redis'
    /// text.
    pub fn from_args(args: &'a [Arg<'a>]) -> Result<Command<'a>, CommandError> {
        let Some((name, rest)) = args.split_first() else {
            return Err(CommandError::Syntax);
        };
        let is = |n: &str| name.eq_ignore_ascii_case(n.as_bytes());
        let arity = |command: &'static str, ok: bool| {
            if ok {
                Ok(())
            } else {
                Err(CommandError::WrongArity { command })
            }
        };
        let arg = |i: usize| rest.get(i).map(|a| &a[..]).unwrap_or_default();
        if is("GET") {
            arity("get", rest.len() == 1)?;
            Ok(Command::Get(arg(0)))
        } else if is("SET") {
            arity("set", rest.len() >= 2)?;
            parse_set(arg(0), arg(1), rest.get(2..).unwrap_or_default()).map(Command::Set)
        } else if is("MGET") {
            arity("mget", !rest.is_empty())?;
            Ok(Command::MGet(rest))
        } else if is("EXISTS") {
            arity("exists", !rest.is_empty())?;
            Ok(Command::Exists(rest))
        } else if is("DEL") {
            arity("del", !rest.is_empty())?;
            Ok(Command::Del(rest))
        } else if is("PING") {
            arity("ping", rest.len() <= 1)?;
            Ok(Command::Ping(rest.first().map(|a| &a[..])))
        } else if is("ECHO") {
            arity("echo", rest.len() == 1)?;
            Ok(Command::Echo(arg(0)))
        } else if is("SCAN") {
            arity("scan", !rest.is_empty())?;
            parse_scan(rest).map(Command::Scan)
        } else if is("INFO") {
            Ok(Command::Info(rest))
        } else if is("DBSIZE") {
            arity("dbsize", rest.is_empty())?;
            Ok(Command::DbSize)
        } else if is("SELECT") {
            arity("select", rest.len() == 1)?;
            match parse_i64(arg(0)) {
                Some(0) => Ok(Command::Select(0)),
                Some(_) => Err(CommandError::DbOutOfRange),
                None => Err(CommandError::NotInteger),
            }
        } else if is("QUIT") {
            Ok(Command::Quit)
        } else if is("CONFIG") {
            arity("config", !rest.is_empty())?;
            if arg(0).eq_ignore_ascii_case(b"GET") {
                arity("config|get", rest.len() >= 2)?;
                Ok(Command::ConfigGet(rest.get(1..).unwrap_or_default()))
            } else {
                Err(CommandError::UnknownSubcommand {
                    command: "CONFIG",
                    sub: text(arg(0)),
                })
            }
        } else if is("CLIENT") {
            arity("client", !rest.is_empty())?;
            parse_client(rest).map(Command::Client)
        } else if is("HELLO") {
            parse_hello(rest).map(Command::Hello)
        } else if is("COMMAND") {
            match rest.first().map(|a| a.to_ascii_uppercase()) {
                None => Ok(Command::Command(CommandInfo::List)),
                Some(s) if s == b"COUNT" => {
                    arity("command|count", rest.len() == 1)?;
                    Ok(Command::Command(CommandInfo::Count))
                }
                Some(s) if s == b"DOCS" => Ok(Command::Command(CommandInfo::Docs)),
                Some(_) => Err(CommandError::UnknownSubcommand {
                    command: "COMMAND",
                    sub: text(arg(0)),
                }),
            }
        } else {
            Err(CommandError::Unknown {
                name: text(name),
                args: rest.iter().take(8).map(|a| text(a)).collect(),
            })
        }
    }
}

fn parse_set<'a>(
    key: &'a [u8],
    value: &'a [u8],
    opts: &[Arg<'_>],
) -> Result<Set<'a>, CommandError> {
    let mut set = Set {
        key,
        value,
        condition: None,
        get: false,
        expiry: None,
    };
    let mut i = 0;
    while let Some(opt) = opts.get(i) {
        let opt = opt.to_ascii_uppercase();
        let timed = match opt.as_slice() {
            b"EX" => Some(Expiry::Ex as fn(u64) -> Expiry),
            b"PX" => Some(Expiry::Px as fn(u64) -> Expiry),
            b"EXAT" => Some(Expiry::ExAt as fn(u64) -> Expiry),
            b"PXAT" => Some(Expiry::PxAt as fn(u64) -> Expiry),
            _ => None,
        };
        if let Some(make) = timed {
            let Some(value) = opts.get(i + 1) else {
                return Err(CommandError::Syntax);
            };
            if set.expiry.is_some() {
                return Err(CommandError::Syntax);
            }
            let n = parse_i64(value).ok_or(CommandError::NotInteger)?;
            if n <= 0 {
                return Err(CommandError::InvalidExpire);
            }
            set.expiry = Some(make(n as u64));
            i += 2;
            continue;
        }
        match opt.as_slice() {
            b"NX" | b"XX" if set.condition.is_none() => {
                set.condition = Some(if opt == b"NX" {
                    SetCondition::Nx
                } else {
                    SetCondition::Xx
                });
            }
            b"KEEPTTL" if set.expiry.is_none() => set.expiry = Some(Expiry::KeepTtl),
            b"GET" => set.get = true,
            _ => return Err(CommandError::Syntax),
        }
        i += 1;
    }
    Ok(set)
}

fn parse_scan<'a>(args: &'a [Arg<'a>]) -> Result<Scan<'a>, CommandError> {
    let cursor = args
        .first()
        .and_then(|c| std::str::from_utf8(c).ok()?.parse::<u64>().ok())
        .ok_or(CommandError::InvalidCursor)?;
    let mut scan = Scan {
        cursor,
        pattern: None,
        count: None,
        key_type: None,
    };
    let mut i = 1;
    while let Some(opt) = args.get(i) {
        let Some(value) = args.get(i + 1) else {
            return Err(CommandError::Syntax);
        };
        if opt.eq_ignore_ascii_case(b"MATCH") {
            scan.pattern = Some(value);
        } else if opt.eq_ignore_ascii_case(b"COUNT") {
            let n = parse_i64(value).ok_or(CommandError::NotInteger)?;
            if n < 1 {
                return Err(CommandError::Syntax);
            }
            scan.count = Some(n as u64);
        } else if opt.eq_ignore_ascii_case(b"TYPE") {
            scan.key_type = Some(value);
        } else {
            return Err(CommandError::Syntax);
        }
        i += 2;
    }
    Ok(scan)
}

fn parse_client<'a>(args: &'a [Arg<'a>]) -> Result<ClientCommand<'a>, CommandError> {
    let sub = args
        .first()
        .map(|a| a.to_ascii_uppercase())
        .unwrap_or_default();
    let arg = |i: usize| args.get(i).map(|a| &a[..]).unwrap_or_default();
    match sub.as_slice() {
        b"SETNAME" if args.len() == 2 => {
            if arg(1).iter().any(|b| *b <= b' ' || *b > b'~') {
                return Err(CommandError::Syntax);
            }
            Ok(ClientCommand::SetName(arg(1)))
        }
        b"SETNAME" => Err(CommandError::WrongArity {
            command: "client|setname",
        }),
        b"GETNAME" => Ok(ClientCommand::GetName),
        b"ID" => Ok(ClientCommand::Id),
        b"SETINFO" if args.len() == 3 => Ok(ClientCommand::SetInfo {
            attr: arg(1),
            value: arg(2),
        }),
        b"SETINFO" => Err(CommandError::WrongArity {
            command: "client|setinfo",
        }),
        _ => Err(CommandError::UnknownSubcommand {
            command: "CLIENT",
            sub: text(arg(0)),
        }),
    }
}

fn parse_hello<'a>(args: &'a [Arg<'a>]) -> Result<Hello<'a>, CommandError> {
    let mut hello = Hello {
        protover: None,
        auth: None,
        setname: None,
    };
    let Some((ver, mut rest)) = args.split_first() else {
        return Ok(hello);
    };
    hello.protover = Some(parse_i64(ver).ok_or(CommandError::BadProtocolVersion)?);
    while let Some((opt, tail)) = rest.split_first() {
        if opt.eq_ignore_ascii_case(b"AUTH") {
            let [user, pass, tail @ ..] = tail else {
                return Err(CommandError::Syntax);
            };
            hello.auth = Some((user, pass));
            rest = tail;
        } else if opt.eq_ignore_ascii_case(b"SETNAME") {
            let [name, tail @ ..] = tail else {
                return Err(CommandError::Syntax);
            };
            hello.setname = Some(name);
            rest = tail;
        } else {
            return Err(CommandError::Syntax);
        }
    }
    Ok(hello)
}
