//! Redis glob matching (`KEYS`, `SCAN MATCH`, `CONFIG GET`), with redis-server's
//! `stringmatchlen` semantics: `*` any run, `?` one byte, `[abc]`, `[^abc]`, `[a-z]` (ends in
//! any order), `\x` a literal `x`. An unterminated `[` class ends at the pattern's end; a
//! trailing lone `\` matches a `\`. Bytes, not characters; case-sensitive.
//!
//! Matching is iterative with one backtrack point for the last `*`, so it takes
//! O(pattern x key) time at worst and never recurses (a hostile pattern like `*a*a*a*...b`
//! cannot blow the stack or take exponential time).

/// Whether `key` matches the glob `pattern`.
///
/// # Examples
///
/// ```
/// use kvtier_proto::resp::glob_match;
/// assert!(glob_match(b"user:*:kv_bytes", b"user:42:kv_bytes"));
/// assert!(glob_match(b"h?llo", b"hallo"));
/// assert!(glob_match(b"h[^e]llo", b"hallo"));
/// assert!(!glob_match(b"h[^e]llo", b"hello"));
/// assert!(glob_match(b"h[a-b]llo", b"hbllo"));
/// assert!(glob_match(br"\*", b"*"));
/// assert!(!glob_match(br"\*", b"x"));
/// ```
pub fn glob_match(pattern: &[u8], key: &[u8]) -> bool {
    let (mut p, mut k) = (0usize, 0usize);
    // Where to resume after the last `*`: pattern index after it, and key index it covers to.
    let mut star: Option<(usize, usize)> = None;
    while k < key.len() {
        let Some(&c) = key.get(k) else { break };
        match pattern.get(p) {
            Some(b'*') => {
                // Collapse runs of stars.
                while pattern.get(p) == Some(&b'*') {
                    p += 1;
                }
                if p == pattern.len() {
                    return true;
                }
                star = Some((p, k));
                continue;
            }
            Some(_) => {
                if let Some(next) = match_one(pattern, p, c) {
                    p = next;
                    k += 1;
                    continue;
                }
            }
            None => {}
        }
        // Mismatch: let the last star eat one more byte, or fail.
        match star {
            Some((sp, sk)) => {
                star = Some((sp, sk + 1));
                p = sp;
                k = sk + 1;
            }
            None => return false,
        }
    }
    pattern
        .get(p..)
        .unwrap_or_default()
        .iter()
        .all(|&b| b == b'*')
}

/// Matches the single-byte element of `pattern` at `p` (not `*`) against `c`: the index after
/// the element when it matches.
fn match_one(pattern: &[u8], p: usize, c: u8) -> Option<usize> {
    match pattern.get(p)? {
        b'?' => Some(p + 1),
        b'[' => match_class(pattern, p + 1, c),
        b'\\' if p + 1 < pattern.len() => (pattern.get(p + 1) == Some(&c)).then_some(p + 2),
        &lit => (lit == c).then_some(p + 1),
    }
}

/// Matches a class whose body starts at `p` (after `[`).
fn match_class(pattern: &[u8], mut p: usize, c: u8) -> Option<usize> {
    let negate = pattern.get(p) == Some(&b'^');
    if negate {
        p += 1;
    }
    let mut matched = false;
    loop {
        match pattern.get(p) {
            // Unterminated class: it ends with the pattern.
            None => break,
            Some(b']') => {
                p += 1;
                break;
            }
            Some(b'\\') if p + 1 < pattern.len() => {
                matched |= pattern.get(p + 1) == Some(&c);
                p += 2;
            }
            Some(&start) if pattern.get(p + 1) == Some(&b'-') && p + 2 < pattern.len() => {
                let end = pattern.get(p + 2).copied().unwrap_or(start);
                let (lo, hi) = if start <= end {
                    (start, end)
                } else {
                    (end, start)
                };
                matched |= (lo..=hi).contains(&c);
                p += 3;
            }
            Some(&lit) => {
                matched |= lit == c;
                p += 1;
            }
        }
    }
    (matched != negate).then_some(p)
}

#[cfg(test)]
mod tests {
    use super::glob_match;

    #[test]
    fn redis_semantics() {
        let cases: &[(&[u8], &[u8], bool)] = &[
            (b"*", b"", true),
            (b"*", b"anything", true),
            (b"", b"", true),
            (b"", b"a", false),
            (b"a*", b"a", true),
            (b"a*b", b"axxb", true),
            (b"a*b", b"axxbx", false),
            (b"*a*b*c", b"xxaxbxxc", true),
            (b"*a*b*c", b"xxaxbxx", false),
            (b"??", b"ab", true),
            (b"??", b"abc", false),
            (b"[abc]", b"b", true),
            (b"[abc]", b"d", false),
            (b"[^abc]", b"d", true),
            (b"[z-a]", b"m", true),
            (br"[\]]", b"]", true),
            (br"[a\-z]", b"-", true),
            (br"[a\-z]", b"m", false),
            (b"[abc", b"c", true),
            (b"[abc", b"cx", false),
            (br"a\", br"a\", true),
            (br"\?", b"?", true),
            (br"\?", b"x", false),
            (b"k[0-9][0-9]", b"k42", true),
            (b"k[0-9][0-9]", b"k4x", false),
            (b"*:kv_bytes", b"prefix:kv_bytes", true),
            (b"*:kv_bytes", b"prefix:metadata", false),
        ];
        for (pattern, key, want) in cases {
            assert_eq!(
                glob_match(pattern, key),
                *want,
                "pattern {:?} key {:?}",
                String::from_utf8_lossy(pattern),
                String::from_utf8_lossy(key)
            );
        }
    }

    #[test]
    fn hostile_pattern_is_fast() {
        let pattern = b"*a*a*a*a*a*a*a*a*a*a*a*a*a*a*a*a*a*a*b".to_vec();
        let key = vec![b'a'; 10_000];
        assert!(!glob_match(&pattern, &key));
    }
}
