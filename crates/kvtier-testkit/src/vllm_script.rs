//! The vLLM publisher stand-in in scripted mode: the test says what each batch holds.
//!
//! [`ScriptedPublisher`] drives `crates/kvtier-router/tests/python/vllm_publisher.py
//! --scripted` (started by [`VllmPublisherBuilder::start_scripted`]). Each [`Batch`] is sent
//! to the script as one JSON line; the script builds the events with the msgspec structs of
//! the batch's [`Generation`] (`vllm_structs.py`, written from vLLM's documented field order),
//! encodes them with `msgspec.msgpack.Encoder` as vLLM does, publishes the payload with the
//! next sequence number, keeps it in its replay buffer, and answers `PUBLISHED <seq>`:
//!
//! ```text
//! test ──Batch──▶ JSON line ──▶ script: msgspec structs ─▶ Encoder ─▶ PUB [topic, seq, payload]
//!                                                                 └─▶ replay buffer (ROUTER)
//! ```
//!
//! A batch can be lost on the PUB socket ([`Batch::lost`]), left out of the replay buffer
//! ([`Batch::unbuffered`]), or replaced by raw bytes ([`ScriptedPublisher::publish_raw`]);
//! [`ScriptedPublisher::restart`] is an engine restart (same ports, sequence from 0, empty
//! buffer). The JSON protocol is in the script's docstring; this module only writes it.
//!
//! # Examples
//!
//! ```no_run
//! use kvtier_testkit::vllm::VllmPublisher;
//! use kvtier_testkit::vllm_script::{Batch, Event, Generation, Hash, Stored};
//!
//! let mut publisher = VllmPublisher::builder().start_scripted();
//! let tokens: Vec<u32> = (0..8).collect();
//! let stored = Stored::new(vec![Hash::named("b0"), Hash::named("b1")], None, tokens, 4)
//!     .with_extra_keys(vec![Some(vec!["tenant-a".into()]), None]);
//! let seq = publisher.publish(&Batch::new(Generation::V4Map, vec![Event::Stored(stored)]));
//! assert_eq!(seq, 0);
//! ```

use std::fmt::Write as _;
use std::time::Duration;

use crate::vllm::VllmPublisher;
#[cfg(doc)]
use crate::vllm::VllmPublisherBuilder;

/// How long a command waits for the script's answer.
const ANSWER_WAIT: Duration = Duration::from_secs(20);

/// A wire generation of `vllm_structs.py` (see its docstring for the fields of each).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Generation {
    /// vLLM PR #16750: positional, int hashes, no medium, batch without a rank.
    V0Int,
    /// + `medium`, and `data_parallel_rank` on the batch.
    V1Medium,
    /// + `lora_name`; bytes or int hashes.
    V2LoraName,
    /// + `extra_keys`, `group_idx`, `kv_cache_spec_kind`, `kv_cache_spec_sliding_window`: the
    ///   last positional generation.
    V3Array,
    /// vLLM PR #42892: tagged maps inside the positional batch.
    V4Map,
    /// [`Generation::V4Map`] with the batch a map too.
    V4MapBatch,
    /// SGLang's positional structs.
    Sglang,
}

impl Generation {
    /// The name `vllm_structs.GENERATIONS` knows it by.
    pub fn name(self) -> &'static str {
        match self {
            Generation::V0Int => "v0_int",
            Generation::V1Medium => "v1_medium",
            Generation::V2LoraName => "v2_lora_name",
            Generation::V3Array => "v3_array",
            Generation::V4Map => "v4_map",
            Generation::V4MapBatch => "v4_map_batch",
            Generation::Sglang => "sglang",
        }
    }
}

/// A block hash as an engine publishes it.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Hash {
    /// An integer hash (any `i64` or `u64`).
    Int(i128),
    /// A byte-string hash (newer vLLM: 32-byte SHA-256 digests).
    Bytes(Vec<u8>),
}

impl Hash {
    /// A 32-byte hash made of `name`'s bytes padded with zeros (unique per short name).
    ///
    /// # Panics
    ///
    /// If `name` is longer than 32 bytes.
    pub fn named(name: &str) -> Hash {
        assert!(name.len() <= 32, "hash names are at most 32 bytes");
        let mut bytes = name.as_bytes().to_vec();
        bytes.resize(32, 0);
        Hash::Bytes(bytes)
    }
}

impl From<u64> for Hash {
    fn from(value: u64) -> Self {
        Hash::Int(i128::from(value))
    }
}

impl From<i64> for Hash {
    fn from(value: i64) -> Self {
        Hash::Int(i128::from(value))
    }
}

/// One element of a block's `extra_keys` tuple.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KeyPart {
    /// A string: a LoRA name, a `cache_salt`, a multimodal identifier.
    Str(String),
    /// An integer.
    Int(i64),
    /// Bytes (a prompt-embeddings hash).
    Bytes(Vec<u8>),
    /// A nested tuple.
    List(Vec<KeyPart>),
}

impl From<&str> for KeyPart {
    fn from(value: &str) -> Self {
        KeyPart::Str(value.to_owned())
    }
}

impl From<i64> for KeyPart {
    fn from(value: i64) -> Self {
        KeyPart::Int(value)
    }
}

/// A `BlockStored` event. Fields left `None` are nil on the wire (or absent, in map layouts,
/// for the fields that have a default); a field the generation lacks must stay `None`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Stored {
    /// The blocks' hashes, parent first.
    pub block_hashes: Vec<Hash>,
    /// The parent of the first block.
    pub parent: Option<Hash>,
    /// The tokens of every block (empty for the offloading connector's CPU copies).
    pub token_ids: Vec<u32>,
    /// Tokens per block.
    pub block_size: usize,
    /// The deprecated numeric LoRA id.
    pub lora_id: Option<i64>,
    /// The medium's name (default `GPU` from [`Stored::new`]).
    pub medium: Option<String>,
    /// The LoRA adapter's name.
    pub lora_name: Option<String>,
    /// One entry per block: the block's extra keys, or `None`.
    pub extra_keys: Option<Vec<Option<Vec<KeyPart>>>>,
    /// The KV-cache group of hybrid models.
    pub group_idx: Option<i64>,
    /// The group's cache kind (`full_attention`, `sliding_window`, ...).
    pub kv_cache_spec_kind: Option<String>,
    /// The group's sliding window, in tokens.
    pub kv_cache_spec_sliding_window: Option<i64>,
}

impl Stored {
    /// A store on `GPU` with no LoRA, no extra keys and no group.
    pub fn new(
        block_hashes: Vec<Hash>,
        parent: Option<Hash>,
        token_ids: Vec<u32>,
        block_size: usize,
    ) -> Self {
        Stored {
            block_hashes,
            parent,
            token_ids,
            block_size,
            lora_id: None,
            medium: Some("GPU".to_owned()),
            lora_name: None,
            extra_keys: None,
            group_idx: None,
            kv_cache_spec_kind: None,
            kv_cache_spec_sliding_window: None,
        }
    }

    /// Sets the medium's name (`None`: nil). Default `GPU`.
    pub fn with_medium(mut self, medium: Option<&str>) -> Self {
        self.medium = medium.map(str::to_owned);
        self
    }

    /// Sets the LoRA adapter's name. Default none.
    pub fn with_lora_name(mut self, name: &str) -> Self {
        self.lora_name = Some(name.to_owned());
        self
    }

    /// Sets the per-block extra keys. Default none.
    pub fn with_extra_keys(mut self, keys: Vec<Option<Vec<KeyPart>>>) -> Self {
        self.extra_keys = Some(keys);
        self
    }

    /// Sets the KV-cache group and its kind. Default none.
    pub fn with_group(mut self, group_idx: i64, kind: &str) -> Self {
        self.group_idx = Some(group_idx);
        self.kv_cache_spec_kind = Some(kind.to_owned());
        self
    }
}

/// One event of a [`Batch`].
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Event {
    /// `BlockStored`.
    Stored(Stored),
    /// `BlockRemoved`.
    Removed {
        /// The removed blocks.
        block_hashes: Vec<Hash>,
        /// The medium's name (`None`: nil).
        medium: Option<String>,
        /// The KV-cache group.
        group_idx: Option<i64>,
    },
    /// `AllBlocksCleared`.
    Cleared,
    /// An event of a type no decoder knows (a future engine's), tagged `tag`, with a
    /// `block_hashes` field.
    Unknown {
        /// The event's tag.
        tag: String,
        /// Its `block_hashes` field.
        block_hashes: Vec<Hash>,
    },
}

impl Event {
    /// A `BlockRemoved` of `block_hashes` on `medium`, without a group.
    pub fn removed(block_hashes: Vec<Hash>, medium: &str) -> Event {
        Event::Removed {
            block_hashes,
            medium: Some(medium.to_owned()),
            group_idx: None,
        }
    }
}

/// One batch to publish: its events, encoded with one [`Generation`]'s structs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Batch {
    generation: Generation,
    events: Vec<Event>,
    rank: Option<i64>,
    live: bool,
    buffered: bool,
}

impl Batch {
    /// A batch of `events`, sent on PUB and kept for replay, with the publisher's rank.
    pub fn new(generation: Generation, events: Vec<Event>) -> Self {
        Batch {
            generation,
            events,
            rank: None,
            live: true,
            buffered: true,
        }
    }

    /// Not sent on the PUB socket (a lost message; still replayable unless
    /// [`Batch::unbuffered`]).
    pub fn lost(mut self) -> Self {
        self.live = false;
        self
    }

    /// Not kept in the replay buffer (history beyond the engine's `buffer_steps`).
    pub fn unbuffered(mut self) -> Self {
        self.buffered = false;
        self
    }

    /// Stamped with data-parallel rank `rank` instead of the publisher's `--dp-rank`.
    pub fn with_rank(mut self, rank: i64) -> Self {
        self.rank = Some(rank);
        self
    }

    /// The JSON command of the script's scripted mode.
    fn to_json(&self) -> String {
        let mut out = String::new();
        out.push_str(r#"{"op":"publish","generation":"#);
        json_str(&mut out, self.generation.name());
        out.push_str(r#","events":["#);
        for (i, event) in self.events.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            event_json(&mut out, event);
        }
        out.push(']');
        if let Some(rank) = self.rank {
            let _ = write!(out, r#","rank":{rank}"#);
        }
        let _ = write!(
            out,
            r#","live":{},"buffered":{}}}"#,
            self.live, self.buffered
        );
        out
    }
}

/// The publisher script in scripted mode; closed (stdin EOF) and killed when dropped.
#[derive(Debug)]
pub struct ScriptedPublisher {
    process: VllmPublisher,
}

impl ScriptedPublisher {
    pub(crate) fn new(process: VllmPublisher) -> Self {
        ScriptedPublisher { process }
    }

    /// Publishes `batch` and returns its sequence number once the script has sent it.
    ///
    /// # Panics
    ///
    /// If the script rejects the batch (a field its generation lacks, say) or does not answer.
    pub fn publish(&mut self, batch: &Batch) -> u64 {
        self.command(&batch.to_json(), "PUBLISHED ")
            .parse()
            .expect("a sequence number")
    }

    /// Publishes `payload` as the batch's bytes (say, an undecodable batch) and returns its
    /// sequence number; `live` and `buffered` as in [`Batch::lost`] and [`Batch::unbuffered`].
    ///
    /// # Panics
    ///
    /// If the script does not answer.
    pub fn publish_raw(&mut self, payload: &[u8], live: bool, buffered: bool) -> u64 {
        let hex: String = payload.iter().map(|b| format!("{b:02x}")).collect();
        let line = format!(
            r#"{{"op":"publish_raw","payload_hex":"{hex}","live":{live},"buffered":{buffered}}}"#
        );
        self.command(&line, "PUBLISHED ")
            .parse()
            .expect("a sequence number")
    }

    /// Restarts the engine: both sockets closed and bound again on the same ports, the
    /// sequence from 0, the replay buffer empty.
    ///
    /// # Panics
    ///
    /// If the script fails to bind again or does not answer.
    pub fn restart(&mut self) {
        self.command(r#"{"op":"restart"}"#, "RESTARTED");
    }

    /// The underlying process (endpoints, ports, raw lines).
    pub fn process(&self) -> &VllmPublisher {
        &self.process
    }

    /// The PUB socket's endpoint, `tcp://127.0.0.1:PORT`.
    pub fn endpoint(&self) -> String {
        self.process.endpoint()
    }

    /// The replay (ROUTER) socket's endpoint, `tcp://127.0.0.1:PORT`.
    pub fn replay_endpoint(&self) -> String {
        self.process.replay_endpoint()
    }

    /// Sends `line` and returns the rest of the answer line starting with `want`.
    fn command(&mut self, line: &str, want: &str) -> String {
        self.process.send(line);
        let answer = self.process.find_line(ANSWER_WAIT, |l| {
            if let Some(rest) = l.strip_prefix(want) {
                Some(Ok(rest.to_owned()))
            } else {
                l.strip_prefix("ERROR ").map(|e| Err(e.to_owned()))
            }
        });
        match answer {
            Some(Ok(rest)) => rest,
            Some(Err(error)) => panic!("the publisher rejected {line}: {error}"),
            None => panic!("no answer from the publisher to {line}"),
        }
    }
}

fn json_str(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if u32::from(c) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

fn bytes_json(out: &mut String, bytes: &[u8]) {
    out.push_str(r#"{"bytes":""#);
    for b in bytes {
        let _ = write!(out, "{b:02x}");
    }
    out.push_str(r#""}"#);
}

fn hash_json(out: &mut String, hash: &Hash) {
    match hash {
        Hash::Int(v) => {
            let _ = write!(out, "{v}");
        }
        Hash::Bytes(b) => bytes_json(out, b),
    }
}

fn hashes_json(out: &mut String, hashes: &[Hash]) {
    out.push('[');
    for (i, hash) in hashes.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        hash_json(out, hash);
    }
    out.push(']');
}

fn key_json(out: &mut String, key: &KeyPart) {
    match key {
        KeyPart::Str(s) => json_str(out, s),
        KeyPart::Int(v) => {
            let _ = write!(out, "{v}");
        }
        KeyPart::Bytes(b) => bytes_json(out, b),
        KeyPart::List(parts) => {
            out.push('[');
            for (i, part) in parts.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                key_json(out, part);
            }
            out.push(']');
        }
    }
}

/// Appends `,"name":` to `out`.
fn key(out: &mut String, name: &str) {
    out.push(',');
    json_str(out, name);
    out.push(':');
}

fn event_json(out: &mut String, event: &Event) {
    match event {
        Event::Stored(s) => {
            out.push_str(r#"{"type":"BlockStored","block_hashes":"#);
            hashes_json(out, &s.block_hashes);
            out.push_str(r#","parent_block_hash":"#);
            match &s.parent {
                Some(parent) => hash_json(out, parent),
                None => out.push_str("null"),
            }
            out.push_str(r#","token_ids":["#);
            for (i, t) in s.token_ids.iter().enumerate() {
                let _ = write!(out, "{}{t}", if i > 0 { "," } else { "" });
            }
            let _ = write!(out, r#"],"block_size":{}"#, s.block_size);
            if let Some(id) = s.lora_id {
                let _ = write!(out, r#","lora_id":{id}"#);
            }
            if let Some(medium) = &s.medium {
                key(out, "medium");
                json_str(out, medium);
            }
            if let Some(name) = &s.lora_name {
                key(out, "lora_name");
                json_str(out, name);
            }
            if let Some(keys) = &s.extra_keys {
                key(out, "extra_keys");
                out.push('[');
                for (i, block) in keys.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    match block {
                        Some(parts) => key_json(out, &KeyPart::List(parts.clone())),
                        None => out.push_str("null"),
                    }
                }
                out.push(']');
            }
            if let Some(group) = s.group_idx {
                let _ = write!(out, r#","group_idx":{group}"#);
            }
            if let Some(kind) = &s.kv_cache_spec_kind {
                key(out, "kv_cache_spec_kind");
                json_str(out, kind);
            }
            if let Some(window) = s.kv_cache_spec_sliding_window {
                let _ = write!(out, r#","kv_cache_spec_sliding_window":{window}"#);
            }
            out.push('}');
        }
        Event::Removed {
            block_hashes,
            medium,
            group_idx,
        } => {
            out.push_str(r#"{"type":"BlockRemoved","block_hashes":"#);
            hashes_json(out, block_hashes);
            if let Some(medium) = medium {
                out.push_str(r#","medium":"#);
                json_str(out, medium);
            }
            if let Some(group) = group_idx {
                let _ = write!(out, r#","group_idx":{group}"#);
            }
            out.push('}');
        }
        Event::Cleared => out.push_str(r#"{"type":"AllBlocksCleared"}"#),
        Event::Unknown { tag, block_hashes } => {
            out.push_str(r#"{"type":"#);
            json_str(out, tag);
            out.push_str(r#","block_hashes":"#);
            hashes_json(out, block_hashes);
            out.push('}');
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batches_become_the_scripts_json() {
        let stored = Stored::new(
            vec![Hash::from(7u64), Hash::Bytes(vec![1, 0xab])],
            None,
            vec![1, 2],
            1,
        )
        .with_lora_name("a\"b")
        .with_extra_keys(vec![Some(vec!["s".into(), 3i64.into()]), None])
        .with_group(0, "full_attention");
        let batch = Batch::new(
            Generation::V4Map,
            vec![
                Event::Stored(stored),
                Event::removed(vec![Hash::from(-1i64)], "CPU"),
                Event::Cleared,
                Event::Unknown {
                    tag: "BlockPinned".into(),
                    block_hashes: vec![],
                },
            ],
        )
        .lost()
        .with_rank(2);
        assert_eq!(
            batch.to_json(),
            concat!(
                r#"{"op":"publish","generation":"v4_map","events":["#,
                r#"{"type":"BlockStored","block_hashes":[7,{"bytes":"01ab"}],"#,
                r#""parent_block_hash":null,"token_ids":[1,2],"block_size":1,"medium":"GPU","#,
                r#""lora_name":"a\"b","extra_keys":[["s",3],null],"group_idx":0,"#,
                r#""kv_cache_spec_kind":"full_attention"},"#,
                r#"{"type":"BlockRemoved","block_hashes":[-1],"medium":"CPU"},"#,
                r#"{"type":"AllBlocksCleared"},{"type":"BlockPinned","block_hashes":[]}],"#,
                r#""rank":2,"live":false,"buffered":true}"#
            )
        );
    }
}
