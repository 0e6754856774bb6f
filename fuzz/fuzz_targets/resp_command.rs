//! RESP2 client commands from untrusted bytes: the incremental parser never panics and always
//! makes progress, what it parses re-encodes as a multibulk command that parses to the same
//! arguments, command recognition and glob matching never panic, and error replies are one
//! line. The framer's length ([`command_len`]) agrees with the parser: a frame it cuts is one
//! command (or an empty one, or one the parser refuses only for what is inside it: an inline
//! line's quoting or a last bulk's missing CRLF), and a command the parser completes is one it
//! can cut.
#![no_main]

use kvtier_proto::resp::{Command, RespError, RespLimits, command_len, glob_match, parse_command};
use libfuzzer_sys::fuzz_target;

const LIMITS: RespLimits = RespLimits {
    max_bulk_len: 4096,
    max_array_len: 64,
    max_inline_len: 1024,
};

fuzz_target!(|data: &[u8]| {
    let mut cut = 0;
    while let Ok(Some(n)) = command_len(&data[cut..], &LIMITS) {
        let rest = &data[cut..];
        if n > rest.len() {
            break;
        }
        match parse_command(&rest[..n], &LIMITS) {
            Ok(Some(one)) => assert_eq!(one.consumed, n),
            Ok(None) => {} // an empty command
            // An inline line is cut at its newline and split (quotes, argument count) only
            // by the parser; a multibulk command's last CRLF is only checked once it is in.
            Err(e) => assert!(
                rest[0] != b'*' || e == RespError::MissingCrlf,
                "the framer cut {n} bytes the parser refuses: {e}"
            ),
        }
        cut += n;
    }
    let mut offset = 0;
    while let Ok(Some(parsed)) = parse_command(&data[offset..], &LIMITS) {
        assert!(parsed.consumed > 0 && offset + parsed.consumed <= data.len());
        offset += parsed.consumed;
        assert!(!parsed.args.is_empty());

        let mut wire = format!("*{}\r\n", parsed.args.len()).into_bytes();
        for a in &parsed.args {
            wire.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
            wire.extend_from_slice(a);
            wire.extend_from_slice(b"\r\n");
        }
        let again = parse_command(&wire, &LIMITS)
            .expect("a re-encoded command parses")
            .expect("and is complete");
        assert_eq!(again.consumed, wire.len());
        assert_eq!(again.args, parsed.args);

        match Command::from_args(&parsed.args) {
            Ok(_) => {}
            Err(e) => assert!(!e.reply_text().contains(['\r', '\n'])),
        }
        if let [_, pattern, key, ..] = &parsed.args[..] {
            let _ = glob_match(pattern, key);
        }
    }
});
