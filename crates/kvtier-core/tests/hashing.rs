//! Public behaviour of the hashing layer: pinned test vectors for both schemes, the prefix
//! property, extra-key isolation, multimodal locality, incremental = batch, partial blocks and
//! configuration errors.

use kvtier_core::{
    BlockHasher, ExtraKeys, HashError, HashScheme, MmKey, SequenceHash, TokenSequence,
};
use proptest::prelude::*;

fn hasher(block_size: usize, scheme: HashScheme, extra: ExtraKeys) -> BlockHasher {
    BlockHasher::new(block_size, scheme, extra).expect("valid hasher")
}

fn chained(seq: &[SequenceHash]) -> Vec<u64> {
    seq.iter().map(|h| h.chained()).collect()
}

/// Checks every way this crate can produce hashes for `tokens` against the expected values.
fn check_all_paths(h: &BlockHasher, tokens: &[u32], blocks: &[u64], seq: &[u64]) {
    assert_eq!(h.block_hashes(tokens), blocks, "block_hashes");
    assert_eq!(chained(&h.sequence_hashes(tokens)), seq, "sequence_hashes");
    assert_eq!(chained(&h.chain(blocks)), seq, "chain");
    let streamed: Vec<u64> = tokens
        .chunks_exact(h.block_size())
        .enumerate()
        .map(|(i, b)| h.hash_block(i, b).expect("full block"))
        .collect();
    assert_eq!(streamed, blocks, "hash_block");
    let mut incremental = TokenSequence::new(h.clone(), Vec::new());
    for &t in tokens {
        incremental.append(t);
    }
    assert_eq!(
        incremental.block_hashes(),
        blocks,
        "TokenSequence block hashes"
    );
    assert_eq!(chained(incremental.sequence_hashes()), seq, "TokenSequence");
}

// ---------------------------------------------------------------------------------------------
// Test vectors.
//
// Every expected value below was computed OUTSIDE this crate, with Python's `xxhash` 4.1.0
// (`xxhash.xxh3_64_intdigest(data, seed=...)`, the reference C implementation) over the byte
// layouts documented on `HashScheme` and `ExtraKeys`, built with `struct.pack`:
//
//   tokens      = struct.pack('<%dI' % n, *tokens)                        # LE u32
//   chain step  = xxh3_64_intdigest(struct.pack('<QQ', parent, block), seed=chain_seed)
//   ns digest   = xxh3_64_intdigest(b''.join(bytes([tag]) + struct.pack('<Q', len(v)) + v),
//                                   seed=LE u64 of b"kvtierNS")           # tags 1 model, 2 lora, 3 salt
//   mm key      = b'\x10' + struct.pack('<Qqq', content_hash, start - block_start, end - block_start)
//   Kvtier block = xxh3_64_intdigest(struct.pack('<QI', ns, block_size) + tokens + mm keys,
//                                    seed=LE u64 of b"kvtierBK")
//   Kvtier root  = xxh3_64_intdigest(struct.pack('<Q', block0), seed=LE u64 of b"kvtierRT")
//   Kvtier chain = chain step with seed LE u64 of b"kvtierCH"
// ---------------------------------------------------------------------------------------------

#[test]
fn vector_dynamo_single_block() {
    // xxh3_64_intdigest(struct.pack('<16I', *range(1, 17)), seed=0)
    let h = hasher(16, HashScheme::dynamo(), ExtraKeys::new());
    let tokens: Vec<u32> = (1..=16).collect();
    assert_eq!(h.block_hashes(&tokens), [0xd2e2_1790_5d2b_da1d]);
    assert_eq!(h.hash_block(0, &tokens), Ok(0xd2e2_1790_5d2b_da1d));
}

#[test]
fn vector_dynamo_three_blocks() {
    // tokens 1..=48, block size 16, block_seed 0, chain_seed 1337.
    let h = hasher(16, HashScheme::dynamo(), ExtraKeys::new());
    let tokens: Vec<u32> = (1..=48).collect();
    let blocks = [
        0xd2e2_1790_5d2b_da1d,
        0x95a4_d8f6_1eda_ea89,
        0xe618_9b32_7621_3894,
    ];
    let seq = [
        0xd2e2_1790_5d2b_da1d,
        0x9585_472c_1339_4f5f,
        0x7cae_b24b_1fdf_0184,
    ];
    check_all_paths(&h, &tokens, &blocks, &seq);
    // A trailing partial block does not change anything.
    let mut longer = tokens.clone();
    longer.extend([7, 7, 7]);
    check_all_paths(&h, &longer, &blocks, &seq);
}

#[test]
fn vector_compat_custom_seeds() {
    // tokens 100..112, block size 4, block_seed 42, chain_seed 7.
    let h = hasher(4, HashScheme::xxh3_compat(42, 7), ExtraKeys::new());
    let tokens: Vec<u32> = (100..112).collect();
    let blocks = [
        0x6518_41a8_1f1a_0187,
        0x32ec_e444_5143_a3cb,
        0x34a8_7f6d_d49e_5064,
    ];
    let seq = [
        0x6518_41a8_1f1a_0187,
        0x14d9_b140_db9b_4518,
        0xc777_755e_1d88_ba8d,
    ];
    check_all_paths(&h, &tokens, &blocks, &seq);
}

#[test]
fn vector_dynamo_long_blocks() {
    // Block size 512 (2 KiB per block: XXH3's long-input path). tokens[i] = i * 2654435761 mod 2^32.
    let h = hasher(512, HashScheme::dynamo(), ExtraKeys::new());
    let tokens: Vec<u32> = (0..1024u32)
        .map(|i| i.wrapping_mul(2_654_435_761))
        .collect();
    let blocks = [0x2184_ef93_f3bc_26ce, 0x65b8_9aca_446e_2638];
    let seq = [0x2184_ef93_f3bc_26ce, 0x0074_4ae6_8d51_785e];
    check_all_paths(&h, &tokens, &blocks, &seq);
}

#[test]
fn vector_compat_namespace_folded_into_block_seed() {
    // model "m", lora "x": ns = 0xa5edb4b83d619163; block seed = 0 ^ ns; tokens 1..=32, bs 16.
    let keys = ExtraKeys::new().with_model("m").with_lora("x");
    assert_eq!(keys.namespace_digest(), Some(0xa5ed_b4b8_3d61_9163));
    let h = hasher(16, HashScheme::dynamo(), keys);
    let tokens: Vec<u32> = (1..=32).collect();
    let blocks = [0xd11d_e4d9_a55e_a4cf, 0xcb87_b55b_e1a1_bdd9];
    let seq = [0xd11d_e4d9_a55e_a4cf, 0x112a_0eaf_5657_3ea2];
    check_all_paths(&h, &tokens, &blocks, &seq);
}

#[test]
fn vector_compat_mm_key() {
    // tokens 0..8, bs 4, mm 0xBEEF over 5..6: block 1 = xxh3(tokens 4..8 || mm key rel. to 4).
    let h = hasher(
        4,
        HashScheme::dynamo(),
        ExtraKeys::new().with_mm(0xBEEF, 5..6),
    );
    let tokens: Vec<u32> = (0..8).collect();
    assert_eq!(
        h.block_hashes(&tokens),
        [0xa1d0_bd89_3c95_31ac, 0x19b2_e414_aae8_41ab]
    );
    // Block 0 is not covered by the key: it is the plain interoperable hash.
    let plain = hasher(4, HashScheme::dynamo(), ExtraKeys::new());
    assert_eq!(plain.block_hashes(&tokens)[0], 0xa1d0_bd89_3c95_31ac);
}

#[test]
fn vector_kvtier_no_keys() {
    // tokens 1..=48, bs 16, no extra keys (ns = digest of the empty encoding).
    let h = hasher(16, HashScheme::Kvtier, ExtraKeys::new());
    let tokens: Vec<u32> = (1..=48).collect();
    let blocks = [
        0xfaef_97d2_2907_2e79,
        0xaef0_bf79_8ed5_a186,
        0x9bbc_9cd5_0f82_d344,
    ];
    let seq = [
        0x6c64_d36b_f57b_42aa,
        0x3c97_3c0d_803b_420d,
        0x989a_5cd6_32e8_32ca,
    ];
    check_all_paths(&h, &tokens, &blocks, &seq);
    assert_eq!(HashScheme::default(), HashScheme::Kvtier);
}

#[test]
fn vector_kvtier_with_keys() {
    // model "llama", salt "tenant", mm 0xFEED over 2..6; tokens 0..12, bs 4.
    let keys = ExtraKeys::new()
        .with_model("llama")
        .with_salt(b"tenant".to_vec())
        .with_mm(0xFEED, 2..6);
    let h = hasher(4, HashScheme::Kvtier, keys);
    let tokens: Vec<u32> = (0..12).collect();
    let blocks = [
        0xff93_ce48_68f2_6a91,
        0x3bd9_a32b_4d8d_509b,
        0x718b_9b13_c674_ef56,
    ];
    let seq = [
        0x45b1_1f14_b30b_a620,
        0x8aeb_b983_9597_499a,
        0x32b0_cebd_fce2_4c7e,
    ];
    check_all_paths(&h, &tokens, &blocks, &seq);
}

// ---------------------------------------------------------------------------------------------
// Structural properties.
// ---------------------------------------------------------------------------------------------

fn schemes() -> [HashScheme; 3] {
    [
        HashScheme::Kvtier,
        HashScheme::dynamo(),
        HashScheme::xxh3_compat(5, 6),
    ]
}

#[test]
fn deterministic_across_hashers() {
    let tokens: Vec<u32> = (0..100).map(|i| i * 31 + 7).collect();
    for scheme in schemes() {
        let keys = || ExtraKeys::new().with_model("m").with_mm(3, 10..20);
        let a = hasher(8, scheme, keys()).sequence_hashes(&tokens);
        let b = hasher(8, scheme, keys()).sequence_hashes(&tokens);
        assert_eq!(a, b);
        assert_eq!(a.len(), 12);
    }
}

#[test]
fn positions_and_parent_links() {
    for scheme in schemes() {
        let seq = hasher(4, scheme, ExtraKeys::new()).sequence_hashes(&[9; 40]);
        for (i, h) in seq.iter().enumerate() {
            assert_eq!(h.position() as usize, i);
        }
        assert_eq!(seq[0].parent_fragment(), 0);
        assert!(seq.windows(2).all(|w| w[0].may_be_parent_of(w[1])));
        // Identical blocks at different positions are different sequence hashes.
        assert!(seq.windows(2).all(|w| w[0] != w[1]));
    }
}

#[test]
fn schemes_are_distinct() {
    let tokens: Vec<u32> = (0..32).collect();
    let kv = hasher(16, HashScheme::Kvtier, ExtraKeys::new()).sequence_hashes(&tokens);
    let dy = hasher(16, HashScheme::dynamo(), ExtraKeys::new()).sequence_hashes(&tokens);
    let other =
        hasher(16, HashScheme::xxh3_compat(0, 1), ExtraKeys::new()).sequence_hashes(&tokens);
    assert_ne!(kv[0], dy[0]);
    assert_eq!(dy[0], other[0]); // same block seed
    assert_ne!(dy[1], other[1]); // other chain seed
}

#[test]
fn partial_trailing_block_is_never_hashed() {
    for scheme in schemes() {
        let h = hasher(8, scheme, ExtraKeys::new());
        for len in 0..8u32 {
            let tokens: Vec<u32> = (0..len).collect();
            assert!(h.block_hashes(&tokens).is_empty());
            assert!(h.sequence_hashes(&tokens).is_empty());
            let seq = TokenSequence::new(h.clone(), tokens.clone());
            assert!(seq.sequence_hashes().is_empty());
            assert_eq!(seq.partial_tokens(), tokens);
        }
        let full: Vec<u32> = (0..16).collect();
        let base = h.sequence_hashes(&full);
        for tail in 1..8u32 {
            let mut tokens = full.clone();
            tokens.extend(100..100 + tail);
            assert_eq!(h.sequence_hashes(&tokens), base);
            let seq = TokenSequence::new(h.clone(), tokens);
            assert_eq!(seq.sequence_hashes(), base);
            assert_eq!(seq.partial_tokens().len(), tail as usize);
        }
    }
}

/// Namespace-key variants, each expected to differ from all the others.
fn namespace_variants() -> Vec<(&'static str, ExtraKeys)> {
    vec![
        ("none", ExtraKeys::new()),
        ("model x", ExtraKeys::new().with_model("x")),
        ("lora x", ExtraKeys::new().with_lora("x")),
        ("salt x", ExtraKeys::new().with_salt(b"x".to_vec())),
        ("model empty", ExtraKeys::new().with_model("")),
        (
            "model ab + lora c",
            ExtraKeys::new().with_model("ab").with_lora("c"),
        ),
        (
            "model a + lora bc",
            ExtraKeys::new().with_model("a").with_lora("bc"),
        ),
        (
            "lora ab + salt c",
            ExtraKeys::new().with_lora("ab").with_salt(b"c".to_vec()),
        ),
        (
            "lora a + salt bc",
            ExtraKeys::new().with_lora("a").with_salt(b"bc".to_vec()),
        ),
        ("model y", ExtraKeys::new().with_model("y")),
    ]
}

#[test]
fn namespace_keys_isolate_every_block() {
    let tokens: Vec<u32> = (0..40).collect();
    for scheme in schemes() {
        let all: Vec<_> = namespace_variants()
            .into_iter()
            .map(|(name, keys)| {
                let h = hasher(8, scheme, keys);
                (name, h.block_hashes(&tokens), h.sequence_hashes(&tokens))
            })
            .collect();
        for (i, (name_a, blocks_a, seq_a)) in all.iter().enumerate() {
            for (name_b, blocks_b, seq_b) in &all[i + 1..] {
                for k in 0..blocks_a.len() {
                    assert_ne!(
                        blocks_a[k], blocks_b[k],
                        "{scheme:?}: {name_a} vs {name_b} block {k}"
                    );
                    assert_ne!(
                        seq_a[k], seq_b[k],
                        "{scheme:?}: {name_a} vs {name_b} seq {k}"
                    );
                }
            }
        }
    }
}

#[test]
fn mm_key_changes_only_overlapping_blocks_and_their_descendants() {
    let tokens: Vec<u32> = (0..64).collect();
    for scheme in schemes() {
        let plain = hasher(8, scheme, ExtraKeys::new());
        // Covers blocks 2 and 3 (positions 20..26).
        let with = hasher(8, scheme, ExtraKeys::new().with_mm(0xCAFE, 20..26));
        let (pb, wb) = (plain.block_hashes(&tokens), with.block_hashes(&tokens));
        let (ps, ws) = (
            plain.sequence_hashes(&tokens),
            with.sequence_hashes(&tokens),
        );
        for i in 0..8 {
            assert_eq!(pb[i] != wb[i], i == 2 || i == 3, "{scheme:?} block {i}");
            assert_eq!(ps[i] != ws[i], i >= 2, "{scheme:?} seq {i}");
        }
    }
}

#[test]
fn mm_key_position_and_content_matter() {
    let tokens = [0u32; 32];
    for scheme in schemes() {
        let at = |hash, range| hasher(16, scheme, ExtraKeys::new().with_mm(hash, range));
        let base = at(1, 2..6).block_hashes(&tokens);
        assert_ne!(
            base,
            at(1, 3..7).block_hashes(&tokens),
            "moved within the block"
        );
        assert_ne!(base, at(1, 2..7).block_hashes(&tokens), "longer");
        assert_ne!(base, at(2, 2..6).block_hashes(&tokens), "other content");
        // The same image spanning a block boundary binds both blocks to its offset in each.
        let span = at(1, 14..18).block_hashes(&tokens);
        let shifted = at(1, 15..19).block_hashes(&tokens);
        assert_ne!(span[0], shifted[0]);
        assert_ne!(span[1], shifted[1]);
    }
}

#[test]
fn mm_keys_in_any_order_hash_alike() {
    let tokens: Vec<u32> = (0..32).collect();
    let a = ExtraKeys::new().with_mm(1, 0..4).with_mm(2, 2..12);
    let mut b = ExtraKeys::new();
    b.push_mm(MmKey::new(2, 2..12));
    b.push_mm(MmKey::new(1, 0..4));
    assert_eq!(
        hasher(4, HashScheme::Kvtier, a).sequence_hashes(&tokens),
        hasher(4, HashScheme::Kvtier, b).sequence_hashes(&tokens)
    );
}

#[test]
fn block_size_is_part_of_kvtier_hashes() {
    // Two blocks of 4 vs one block of 8 over the same tokens: roots must differ.
    let tokens: Vec<u32> = (0..8).collect();
    let four = hasher(4, HashScheme::Kvtier, ExtraKeys::new()).block_hashes(&tokens);
    let eight = hasher(8, HashScheme::Kvtier, ExtraKeys::new()).block_hashes(&tokens);
    assert!(!four.contains(&eight[0]));
}

// ---------------------------------------------------------------------------------------------
// Errors.
// ---------------------------------------------------------------------------------------------

#[test]
fn invalid_block_size_is_an_error() {
    for bs in [0, BlockHasher::MAX_BLOCK_SIZE + 1, usize::MAX] {
        let err = BlockHasher::new(bs, HashScheme::default(), ExtraKeys::new()).unwrap_err();
        assert_eq!(
            err,
            HashError::InvalidBlockSize {
                block_size: bs,
                max: 1 << 16
            }
        );
        assert!(err.to_string().contains("invalid block size"));
    }
    for bs in [1, 3, 16, 100, 512, 1 << 16] {
        assert!(BlockHasher::new(bs, HashScheme::dynamo(), ExtraKeys::new()).is_ok());
    }
}

#[test]
fn invalid_mm_ranges_are_errors() {
    let new = |keys| BlockHasher::new(16, HashScheme::default(), keys);
    assert_eq!(
        new(ExtraKeys::new().with_mm(7, 5..5)).unwrap_err(),
        HashError::EmptyMmRange {
            content_hash: 7,
            start: 5,
            end: 5
        }
    );
    assert!(matches!(
        new({
            let mut keys = ExtraKeys::new();
            keys.push_mm(MmKey {
                start: 6,
                end: 5,
                content_hash: 7,
            });
            keys
        }),
        Err(HashError::EmptyMmRange { .. })
    ));
    assert_eq!(
        new(ExtraKeys::new().with_mm(7, 0..usize::MAX)).unwrap_err(),
        HashError::MmRangeOutOfBounds {
            content_hash: 7,
            start: 0,
            end: usize::MAX,
            limit: MmKey::MAX_END
        }
    );
    assert!(new(ExtraKeys::new().with_mm(7, 0..MmKey::MAX_END)).is_ok());
}

#[test]
fn hash_block_rejects_wrong_length() {
    let h = hasher(4, HashScheme::default(), ExtraKeys::new());
    assert_eq!(
        h.hash_block(0, &[1, 2, 3]),
        Err(HashError::BlockLength {
            expected: 4,
            actual: 3
        })
    );
    assert!(h.hash_block(0, &[1, 2, 3, 4, 5]).is_err());
}

// ---------------------------------------------------------------------------------------------
// Properties.
// ---------------------------------------------------------------------------------------------

fn scheme_strategy() -> impl Strategy<Value = HashScheme> {
    prop_oneof![
        Just(HashScheme::Kvtier),
        Just(HashScheme::dynamo()),
        any::<(u64, u64)>().prop_map(|(b, c)| HashScheme::xxh3_compat(b, c)),
    ]
}

fn keys_strategy() -> impl Strategy<Value = ExtraKeys> {
    (
        proptest::option::of("[a-c]{0,3}"),
        proptest::option::of(proptest::collection::vec(any::<u8>(), 0..4)),
        proptest::collection::vec((any::<u64>(), 0usize..150, 1usize..40), 0..3),
    )
        .prop_map(|(model, salt, mm)| {
            let mut keys = ExtraKeys::new();
            if let Some(m) = model {
                keys = keys.with_model(m);
            }
            if let Some(s) = salt {
                keys = keys.with_salt(s);
            }
            for (hash, start, len) in mm {
                keys = keys.with_mm(hash, start..start + len);
            }
            keys
        })
}

proptest! {
    /// Changing the token at position `p` changes block `p / bs` and nothing before it; the
    /// sequence hashes of every block from there on change, the earlier ones do not.
    #[test]
    fn prefix_property(
        scheme in scheme_strategy(),
        keys in keys_strategy(),
        bs in 1usize..9,
        tokens in proptest::collection::vec(any::<u32>(), 1..200),
        pos_seed in any::<usize>(),
        delta in 1u32..,
    ) {
        let h = hasher(bs, scheme, keys);
        let pos = pos_seed % tokens.len();
        let mut changed = tokens.clone();
        changed[pos] = changed[pos].wrapping_add(delta);
        let (b0, b1) = (h.block_hashes(&tokens), h.block_hashes(&changed));
        let (s0, s1) = (h.sequence_hashes(&tokens), h.sequence_hashes(&changed));
        let hit = pos / bs;
        for i in 0..b0.len() {
            prop_assert_eq!(b0[i] != b1[i], i == hit, "block {}", i);
            prop_assert_eq!(s0[i] != s1[i], i >= hit, "seq {}", i);
        }
    }

    /// Equal prefixes give equal hashes however the rest differs.
    #[test]
    fn shared_prefix_shares_hashes(
        scheme in scheme_strategy(),
        keys in keys_strategy(),
        bs in 1usize..9,
        prefix in proptest::collection::vec(any::<u32>(), 0..100),
        a in proptest::collection::vec(any::<u32>(), 0..50),
        b in proptest::collection::vec(any::<u32>(), 0..50),
    ) {
        let h = hasher(bs, scheme, keys);
        let sa = h.sequence_hashes(&[prefix.as_slice(), &a].concat());
        let sb = h.sequence_hashes(&[prefix.as_slice(), &b].concat());
        let shared = prefix.len() / bs;
        prop_assert_eq!(&sa[..shared], &sb[..shared]);
    }

    /// Growing a `TokenSequence` token by token, by slices, or after truncations gives exactly
    /// the hashes of hashing the final tokens in one go.
    #[test]
    fn incremental_equals_batch(
        scheme in scheme_strategy(),
        keys in keys_strategy(),
        bs in 1usize..9,
        initial in proptest::collection::vec(any::<u32>(), 0..40),
        ops in proptest::collection::vec(
            prop_oneof![
                any::<u32>().prop_map(|t| (0u8, vec![t], 0usize)),
                proptest::collection::vec(any::<u32>(), 0..20).prop_map(|ts| (1u8, ts, 0)),
                (0usize..80).prop_map(|n| (2u8, Vec::new(), n)),
            ],
            0..30,
        ),
    ) {
        let h = hasher(bs, scheme, keys);
        let mut seq = TokenSequence::new(h.clone(), initial.clone());
        let mut model = initial;
        for (kind, tokens, n) in ops {
            match kind {
                0 => {
                    let before = seq.block_count();
                    let got = seq.append(tokens[0]);
                    model.push(tokens[0]);
                    prop_assert_eq!(got.is_some(), model.len() % bs == 0);
                    prop_assert_eq!(got, seq.sequence_hashes().get(before).copied());
                }
                1 => {
                    let before = seq.block_count();
                    let new = seq.extend(&tokens).to_vec();
                    model.extend_from_slice(&tokens);
                    prop_assert_eq!(&new[..], &seq.sequence_hashes()[before..]);
                }
                _ => {
                    seq.truncate(n);
                    model.truncate(n);
                }
            }
            prop_assert_eq!(seq.tokens(), &model[..]);
            prop_assert_eq!(seq.len(), model.len());
            prop_assert_eq!(seq.partial_tokens(), &model[model.len() / bs * bs..]);
        }
        prop_assert_eq!(seq.sequence_hashes(), &h.sequence_hashes(&model)[..]);
        prop_assert_eq!(seq.block_hashes(), &h.block_hashes(&model)[..]);
        let blocks: Vec<_> = seq.blocks().collect();
        prop_assert_eq!(blocks.len(), model.len() / bs);
        for (i, b) in blocks.iter().enumerate() {
            prop_assert_eq!(b.tokens(), &model[i * bs..(i + 1) * bs]);
            prop_assert_eq!(b.position() as usize, i);
            prop_assert_eq!(Ok(b.block_hash()), h.hash_block(i, b.tokens()));
        }
    }

    /// `chain` over `block_hashes` equals `sequence_hashes`, and `extend_chain` one step at a
    /// time equals `chain`.
    #[test]
    fn chain_equals_sequence_hashes(
        scheme in scheme_strategy(),
        keys in keys_strategy(),
        bs in 1usize..9,
        tokens in proptest::collection::vec(any::<u32>(), 0..100),
    ) {
        let h = hasher(bs, scheme, keys);
        let blocks = h.block_hashes(&tokens);
        let chain = h.chain(&blocks);
        prop_assert_eq!(&chain, &h.sequence_hashes(&tokens));
        let mut parent = None;
        for (i, &b) in blocks.iter().enumerate() {
            let next = h.extend_chain(parent, b);
            prop_assert_eq!(next, chain[i]);
            parent = Some(next);
        }
    }
}
