//! The RESP2 codec on its own: incremental parsing at every split point, limits and protocol
//! errors with redis' texts, inline quoting, command recognition with SET/SCAN options and
//! redis' error replies, reply bytes, and arbitrary bytes never panicking.

use kvtier_proto::WriteBuf;
use kvtier_proto::resp::{
    Arg, ClientCommand, Command, CommandError, CommandInfo, Expiry, Reply, RespError, RespLimits,
    SetCondition, command_len, config_get_reply, parse_command, parse_command_into, scan_reply,
    write_array_len, write_bulk, write_integer,
};
use proptest::prelude::*;

fn multibulk(args: &[&[u8]]) -> Vec<u8> {
    let mut v = format!("*{}\r\n", args.len()).into_bytes();
    for a in args {
        v.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
        v.extend_from_slice(a);
        v.extend_from_slice(b"\r\n");
    }
    v
}

fn parse_all(buf: &[u8]) -> Result<Vec<Vec<Vec<u8>>>, RespError> {
    let limits = RespLimits::default();
    let mut offset = 0;
    let mut out = vec![];
    while let Some(p) = parse_command(&buf[offset..], &limits)? {
        offset += p.consumed;
        out.push(p.args.iter().map(|a| a.to_vec()).collect());
    }
    Ok(out)
}

fn args(parts: &[&str]) -> Vec<Arg<'static>> {
    parts
        .iter()
        .map(|p| Arg::Owned(p.as_bytes().to_vec()))
        .collect()
}

fn command(parts: &[&str]) -> Result<String, CommandError> {
    let a = args(parts);
    Command::from_args(&a).map(|c| format!("{c:?}"))
}

#[test]
fn every_split_point_gives_none_or_the_same_commands() {
    let mut wire = multibulk(&[b"SET", b"key", b"va\r\nlue"]);
    wire.extend_from_slice(b"PING\r\n");
    wire.extend_from_slice(b"*0\r\n");
    wire.extend_from_slice(&multibulk(&[b"MGET", b"a", b"", b"c"]));
    wire.extend_from_slice(b"  \r\n");
    wire.extend_from_slice(b"set \"q u\\x41\" 'it\\'s'\n");
    let all = parse_all(&wire).unwrap();
    assert_eq!(all.len(), 4);
    assert_eq!(
        all[0],
        [b"SET".to_vec(), b"key".to_vec(), b"va\r\nlue".to_vec()]
    );
    assert_eq!(all[1], [b"PING".to_vec()]);
    assert_eq!(
        all[2],
        [b"MGET".to_vec(), b"a".to_vec(), vec![], b"c".to_vec()]
    );
    assert_eq!(
        all[3],
        [b"set".to_vec(), b"q uA".to_vec(), b"it's".to_vec()]
    );
    for cut in 0..wire.len() {
        let got = parse_all(&wire[..cut]).unwrap();
        assert_eq!(got[..], all[..got.len()], "prefix of {cut} bytes");
    }
    // The reusing variant parses the same commands out of the same bytes.
    let (mut offset, mut args, mut again) = (0, Vec::new(), Vec::new());
    while let Some(used) =
        parse_command_into(&wire[offset..], &RespLimits::default(), &mut args).unwrap()
    {
        offset += used;
        again.push(args.iter().map(|a| a.to_vec()).collect::<Vec<_>>());
    }
    assert_eq!(again, all);
    assert!(args.is_empty(), "left empty when no command is complete");
}

#[test]
fn protocol_errors_have_redis_texts() {
    let limits = RespLimits {
        max_bulk_len: 10,
        max_array_len: 3,
        max_inline_len: 16,
    };
    let err = |b: &[u8]| parse_command(b, &limits).unwrap_err();
    assert_eq!(err(b"*x\r\n"), RespError::InvalidMultibulkLength);
    assert_eq!(err(b"*01\r\n"), RespError::InvalidMultibulkLength);
    assert_eq!(err(b"*1\rx"), RespError::InvalidMultibulkLength);
    assert_eq!(err(b"*4\r\n"), RespError::ArrayTooLong { len: 4, max: 3 });
    assert_eq!(err(b"*1\r\n:1\r\n"), RespError::ExpectedBulk { got: b':' });
    assert_eq!(err(b"*1\r\n$-1\r\n"), RespError::InvalidBulkLength);
    assert_eq!(err(b"*1\r\n$1x\r\n"), RespError::InvalidBulkLength);
    assert_eq!(
        err(b"*1\r\n$11\r\n"),
        RespError::BulkTooLong { len: 11, max: 10 }
    );
    assert_eq!(err(b"*1\r\n$1\r\nab\r\n"), RespError::MissingCrlf);
    assert_eq!(
        err(b"GET aaaaaaaaaaaaaaaa"),
        RespError::InlineTooLong { max: 16 }
    );
    assert_eq!(err(b"GET \"abc\n"), RespError::UnbalancedQuotes);
    assert_eq!(err(b"GET \"a\"b\n"), RespError::UnbalancedQuotes);
    assert_eq!(
        err(b"a b c d\n"),
        RespError::ArrayTooLong { len: 4, max: 3 }
    );
    // A length line with no CRLF in sight is refused, not buffered forever.
    assert_eq!(err(&[b'*'; 40]), RespError::InvalidMultibulkLength);
    // A good command before a bad one is returned; the bad one fails on the next call.
    let buf = b"*1\r\n$1\r\na\r\n*1\r\n:";
    let first = parse_command(buf, &limits).unwrap().unwrap();
    assert_eq!(first.consumed, 11);
    assert_eq!(
        err(&buf[first.consumed..]),
        RespError::ExpectedBulk { got: b':' }
    );
    assert_eq!(
        RespError::BulkTooLong { len: 11, max: 10 }.reply_text(),
        "ERR Protocol error: bulk length 11 exceeds the limit of 10"
    );
    // Huge declared lengths under huge limits wait for more instead of overflowing.
    let unlimited = RespLimits {
        max_bulk_len: usize::MAX,
        max_array_len: usize::MAX,
        max_inline_len: usize::MAX,
    };
    assert_eq!(
        parse_command(
            b"*9223372036854775807\r\n$9223372036854775807\r\nab",
            &unlimited
        ),
        Ok(None)
    );
    assert_eq!(parse_command(b"GET abc", &unlimited), Ok(None));
    // Incomplete input within limits waits for more.
    assert_eq!(parse_command(b"*1\r\n$10\r\nabc", &limits), Ok(None));
    assert_eq!(parse_command(b"GET abc", &limits), Ok(None));
}

#[test]
fn set_options() {
    let set = |parts: &[&str]| {
        let a = args(parts);
        match Command::from_args(&a) {
            Ok(Command::Set(s)) => Ok((s.condition, s.expiry, s.get)),
            Ok(other) => panic!("{other:?}"),
            Err(e) => Err(e.reply_text()),
        }
    };
    assert_eq!(set(&["SET", "k", "v"]), Ok((None, None, false)));
    assert_eq!(
        set(&["set", "k", "v", "ex", "10", "nx"]),
        Ok((Some(SetCondition::Nx), Some(Expiry::Ex(10)), false))
    );
    assert_eq!(
        set(&["SET", "k", "v", "XX", "PX", "1500", "GET"]),
        Ok((Some(SetCondition::Xx), Some(Expiry::Px(1500)), true))
    );
    assert_eq!(
        set(&["SET", "k", "v", "EXAT", "9"]).unwrap().1,
        Some(Expiry::ExAt(9))
    );
    assert_eq!(
        set(&["SET", "k", "v", "PXAT", "9"]).unwrap().1,
        Some(Expiry::PxAt(9))
    );
    assert_eq!(
        set(&["SET", "k", "v", "KEEPTTL"]).unwrap().1,
        Some(Expiry::KeepTtl)
    );
    let syntax = Err("ERR syntax error".to_string());
    assert_eq!(set(&["SET", "k", "v", "NX", "XX"]), syntax);
    assert_eq!(set(&["SET", "k", "v", "EX", "1", "PX", "1"]), syntax);
    assert_eq!(set(&["SET", "k", "v", "KEEPTTL", "EX", "1"]), syntax);
    assert_eq!(set(&["SET", "k", "v", "EX"]), syntax);
    assert_eq!(set(&["SET", "k", "v", "BOGUS"]), syntax);
    assert_eq!(
        set(&["SET", "k", "v", "EX", "0"]),
        Err("ERR invalid expire time in 'set' command".into())
    );
    assert_eq!(
        set(&["SET", "k", "v", "EX", "ten"]),
        Err("ERR value is not an integer or out of range".into())
    );
    assert_eq!(
        set(&["SET", "k"]),
        Err("ERR wrong number of arguments for 'set' command".into())
    );
}

#[test]
fn scan_and_other_commands() {
    let a = args(&[
        "SCAN", "17", "match", "k*", "COUNT", "100", "TYPE", "string",
    ]);
    let Ok(Command::Scan(scan)) = Command::from_args(&a) else {
        panic!()
    };
    assert_eq!(scan.cursor, 17);
    assert_eq!(scan.pattern, Some(&b"k*"[..]));
    assert_eq!(scan.count, Some(100));
    assert_eq!(scan.key_type, Some(&b"string"[..]));
    let text = |parts: &[&str]| command(parts).unwrap_err().reply_text();
    assert_eq!(text(&["SCAN", "-1"]), "ERR invalid cursor");
    assert_eq!(text(&["SCAN", "0", "COUNT", "0"]), "ERR syntax error");
    assert_eq!(text(&["SCAN", "0", "MATCH"]), "ERR syntax error");
    assert_eq!(
        text(&["FLUSHALL", "ASYNC"]),
        "ERR unknown command 'FLUSHALL', with args beginning with: 'ASYNC' "
    );
    assert_eq!(
        text(&["CONFIG", "SET", "x", "y"]),
        "ERR unknown subcommand 'SET'. Try CONFIG HELP."
    );
    assert_eq!(
        text(&["GET"]),
        "ERR wrong number of arguments for 'get' command"
    );
    assert_eq!(text(&["SELECT", "1"]), "ERR DB index is out of range");
    assert!(command(&["SELECT", "0"]).is_ok());

    let a = args(&["mget", "a", "b"]);
    assert!(matches!(Command::from_args(&a), Ok(Command::MGet(keys)) if keys.len() == 2));
    let a = args(&["DEL", "a", "b", "a"]);
    assert!(matches!(Command::from_args(&a), Ok(Command::Del(keys)) if keys.len() == 3));
    let a = args(&["exists", "a"]);
    assert!(matches!(Command::from_args(&a), Ok(Command::Exists(keys)) if keys.len() == 1));
    let a = args(&["PING"]);
    assert_eq!(Command::from_args(&a), Ok(Command::Ping(None)));
    let a = args(&["ping", "hi"]);
    assert_eq!(Command::from_args(&a), Ok(Command::Ping(Some(b"hi"))));
    let a = args(&["QUIT"]);
    assert_eq!(Command::from_args(&a), Ok(Command::Quit));
    let a = args(&["INFO", "server"]);
    assert!(matches!(Command::from_args(&a), Ok(Command::Info(s)) if s.len() == 1));
    let a = args(&["CLIENT", "SETNAME", "bench"]);
    assert_eq!(
        Command::from_args(&a),
        Ok(Command::Client(ClientCommand::SetName(b"bench")))
    );
    let a = args(&["client", "setinfo", "LIB-NAME", "redis-py"]);
    assert_eq!(
        Command::from_args(&a),
        Ok(Command::Client(ClientCommand::SetInfo {
            attr: b"LIB-NAME",
            value: b"redis-py"
        }))
    );
    let a = args(&["COMMAND", "DOCS"]);
    assert_eq!(
        Command::from_args(&a),
        Ok(Command::Command(CommandInfo::Docs))
    );
    let a = args(&["CONFIG", "GET", "save", "appendonly"]);
    let Ok(Command::ConfigGet(params)) = Command::from_args(&a) else {
        panic!()
    };
    let mut out = WriteBuf::new();
    config_get_reply(params, kvtier_proto::resp::DEFAULT_CONFIG).encode(&mut out);
    assert_eq!(
        out.to_vec(),
        b"*4\r\n$4\r\nsave\r\n$0\r\n\r\n$10\r\nappendonly\r\n$2\r\nno\r\n"
    );
}

#[test]
fn reply_bytes() {
    let enc = |r: Reply<'_>| {
        let mut out = WriteBuf::new();
        r.encode(&mut out);
        out.to_vec()
    };
    assert_eq!(enc(Reply::OK), b"+OK\r\n");
    assert_eq!(enc(Reply::PONG), b"+PONG\r\n");
    assert_eq!(
        enc(Reply::Error("ERR bad\r\nthing".into())),
        b"-ERR bad  thing\r\n"
    );
    assert_eq!(enc(Reply::Integer(i64::MIN)), b":-9223372036854775808\r\n");
    assert_eq!(enc(Reply::Bulk(b"")), b"$0\r\n\r\n");
    assert_eq!(enc(Reply::Null), b"$-1\r\n");
    assert_eq!(enc(Reply::NullArray), b"*-1\r\n");
    assert_eq!(enc(Reply::Array(vec![])), b"*0\r\n");

    // Large bulks are borrowed; streaming helpers produce the same bytes as Reply.
    let big = vec![b'z'; 100_000];
    let mut out = WriteBuf::new();
    write_array_len(&mut out, 3);
    write_bulk(&mut out, &big);
    write_integer(&mut out, 7);
    Reply::Null.encode(&mut out);
    assert_eq!(out.segment_count(), 3);
    assert!(out.segments().any(|s| std::ptr::eq(s, big.as_slice())));
    assert_eq!(
        out.to_vec(),
        enc(Reply::Array(vec![
            Reply::Bulk(&big),
            Reply::Integer(7),
            Reply::Null
        ]))
    );

    let mut out = WriteBuf::new();
    scan_reply(&mut out, 42, [&b"k1"[..]]);
    assert_eq!(out.to_vec(), b"*2\r\n$2\r\n42\r\n*1\r\n$2\r\nk1\r\n");
}

proptest! {
    #[test]
    fn multibulk_round_trip(parts in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..100), 1..10)) {
        let refs: Vec<&[u8]> = parts.iter().map(Vec::as_slice).collect();
        let wire = multibulk(&refs);
        let parsed = parse_command(&wire, &RespLimits::default()).unwrap().unwrap();
        prop_assert_eq!(parsed.consumed, wire.len());
        prop_assert_eq!(parsed.args.iter().map(|a| a.to_vec()).collect::<Vec<_>>(), parts);
    }

    /// The framer's view agrees with the parser's: at every split point of a pipeline of
    /// non-empty commands, a known length is the command's whole length, and it is known
    /// whenever the parser has the whole command.
    #[test]
    fn command_len_agrees_with_the_parser(
        cmds in prop::collection::vec(prop::collection::vec(prop::collection::vec(any::<u8>(), 0..40), 1..5), 1..4),
        inline in any::<bool>(),
    ) {
        let limits = RespLimits::default();
        let mut wire = Vec::new();
        for c in &cmds {
            let refs: Vec<&[u8]> = c.iter().map(Vec::as_slice).collect();
            wire.extend(multibulk(&refs));
        }
        if inline {
            wire.extend_from_slice(b"PING x\r\n");
        }
        let first = parse_command(&wire, &limits).unwrap().unwrap().consumed;
        for cut in 0..=wire.len() {
            let known = command_len(&wire[..cut], &limits).unwrap();
            if let Some(n) = known {
                prop_assert_eq!(n, first);
            }
            if cut >= first {
                prop_assert_eq!(known, Some(first));
            }
        }
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..300)) {
        let limits = RespLimits { max_bulk_len: 64, max_array_len: 8, max_inline_len: 64 };
        let _ = command_len(&bytes, &limits);
        let mut offset = 0;
        while let Ok(Some(p)) = parse_command(&bytes[offset..], &limits) {
            prop_assert!(p.consumed > 0 && offset + p.consumed <= bytes.len());
            offset += p.consumed;
            if let Err(e) = Command::from_args(&p.args) {
                prop_assert!(!e.reply_text().contains('\n'));
            }
        }
    }

    #[test]
    fn glob_star_and_literal_agree_with_a_naive_model(key in "[ab]{0,8}", pat in "[ab*?]{0,6}") {
        prop_assert_eq!(kvtier_proto::resp::glob_match(pat.as_bytes(), key.as_bytes()), naive(pat.as_bytes(), key.as_bytes()));
    }
}

/// Exponential but obviously correct matcher for `*`, `?` and literals.
fn naive(p: &[u8], k: &[u8]) -> bool {
    match p.split_first() {
        None => k.is_empty(),
        Some((b'*', rest)) => (0..=k.len()).any(|i| naive(rest, &k[i..])),
        Some((b'?', rest)) => !k.is_empty() && naive(rest, &k[1..]),
        Some((c, rest)) => k.first() == Some(c) && naive(rest, &k[1..]),
    }
}
