"""Writes the golden vLLM / SGLang KV-event batches of kvtier-router's tests/vllm_golden.rs.

Each batch is built from the msgspec structs of one wire generation
(``crates/kvtier-router/tests/python/vllm_structs.py``, written from vLLM's documented field
order) and encoded by msgspec itself, exactly as ``ZmqEventPublisher`` encodes what it
publishes. For every batch ``NAME`` the script writes, under
``crates/kvtier-router/tests/data/vllm/``:

* ``NAME.msgpack``: the payload bytes (the third frame of a PUB message);
* ``NAME.json``: what it holds: the generation, the batch field by field (bytes as
  ``{"bytes": "<hex>"}``), and for each event what a decoder must make of it.

Regenerate (byte for byte; nothing here depends on time or randomness)::

    scripts/python-env.sh                                 # the venv with msgspec
    target/py-venv/bin/python scripts/vllm_golden.py      # rewrite the files
    target/py-venv/bin/python scripts/vllm_golden.py --check   # exit 1 if any differs

The Rust test asserts every decoded field, so a change here goes with a change there.
"""

import argparse
import json
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "crates/kvtier-router/tests/python"))

import vllm_structs  # noqa: E402  (the path above)

OUT = ROOT / "crates/kvtier-router/tests/data/vllm"
BLOCK_SIZE = 4
U64_MAX = 2**64 - 1


def tokens(seed, blocks):
    """Block-aligned token ids; tests/vllm_golden.rs has the same function."""
    return [seed * 1000 + t for t in range(blocks * BLOCK_SIZE)]


def h(name):
    """A 32-byte block hash (vLLM's default hashes are 32-byte sha256 digests): the name,
    padded with zeros, so that the Rust test can spell it."""
    return name.encode().ljust(32, b"\0")


def stored(gen, hashes, parent, toks, **extra):
    """A BlockStored of `gen` with every field it has (the optional ones from `extra`)."""
    fields = {
        "block_hashes": hashes,
        "parent_block_hash": parent,
        "token_ids": toks,
        "block_size": BLOCK_SIZE,
        "lora_id": None,
        "medium": "GPU",
        "lora_name": None,
    }
    fields.update(extra)
    names = gen.field_names(gen.BlockStored)
    missing = [k for k in extra if k not in names]
    if missing:
        raise ValueError(f"{gen.name} has no field(s) {missing}")
    return gen.BlockStored(**{k: v for k, v in fields.items() if k in names})


def removed(gen, hashes, **extra):
    fields = {"block_hashes": hashes, "medium": "GPU"}
    fields.update(extra)
    names = gen.field_names(gen.BlockRemoved)
    return gen.BlockRemoved(**{k: v for k, v in fields.items() if k in names})


def v0_int():
    g = vllm_structs.GENERATIONS["v0_int"]
    return g, None, [
        (stored(g, [11, U64_MAX], None, tokens(1, 2)),
         "root chain of 2 blocks; the second hash is u64::MAX (msgpack uint64)"),
        (stored(g, [-5], U64_MAX, tokens(2, 1), lora_id=7),
         "child of u64::MAX with a negative i64 hash and the deprecated lora_id 7"),
        (removed(g, [-5]), "no medium field in this generation"),
        (g.AllBlocksCleared(), "prefix-cache reset"),
    ]


def v1_medium():
    g = vllm_structs.GENERATIONS["v1_medium"]
    return g, 1, [
        (stored(g, [101, 102], None, tokens(3, 2)), "GPU chain of 2 blocks"),
        (stored(g, [101, 102], None, [], medium="CPU"),
         "offloading connector: CPU copies, empty token_ids, no parent"),
        (removed(g, [101, 102]), "GPU copies evicted"),
        (removed(g, [102], medium="CPU"), "CPU copy evicted"),
        (stored(g, [103], None, tokens(4, 1), medium=None), "medium nil: GPU by convention"),
    ]


def v2_lora_name():
    g = vllm_structs.GENERATIONS["v2_lora_name"]
    return g, 0, [
        (stored(g, [h("a0"), h("a1")], None, tokens(5, 2), lora_id=3, lora_name="sql-adapter"),
         "bytes hashes under a LoRA (lora_id and lora_name)"),
        (stored(g, [h("a2")], h("a1"), tokens(5, 3)[2 * BLOCK_SIZE:]), "child by bytes parent"),
        (stored(g, [9001], h("a2"), tokens(6, 1)), "an int hash under a bytes parent"),
        (removed(g, [h("a2"), 9001]), "mixed bytes and int hashes"),
    ]


def full(name):
    """Every later field: LoRA, extra_keys (cache_salt, mm identifiers, prompt-embeds bytes,
    ints, nested tuples), hybrid groups, CPU offload, an unknown event type and an unknown
    medium in an otherwise good batch, AllBlocksCleared."""
    g = vllm_structs.GENERATIONS[name]
    embeds = h("prompt-embeds")
    # vLLM >= 0.21 (_gen_mm_extra_hash_keys): an item overlapping a block adds
    # (identifier, item offset - block start); older vLLM added the identifier alone.
    image_keys = [(("img-hash-1", 2), "tenant-a"), (("img-hash-1", -2),), None]
    return g, 2, [
        (stored(g, [h("l0"), h("l1")], None, tokens(7, 2), lora_id=1, lora_name="sql-adapter",
                extra_keys=[("sql-adapter",), ("sql-adapter",)], group_idx=0,
                kv_cache_spec_kind="full_attention"),
         "LoRA: vLLM puts lora_name first in every block's extra keys"),
        (stored(g, [h("s0"), h("s1"), h("s2")], None, tokens(8, 3),
                extra_keys=image_keys, group_idx=0, kv_cache_spec_kind="full_attention"),
         "image placeholder at tokens 2..7: (identifier, offset - block start) in blocks 0 "
         "and 1, then cache_salt tenant-a on block 0"),
        (stored(g, [h("s0"), h("s1"), h("s2")], None, tokens(8, 3),
                extra_keys=image_keys, group_idx=1,
                kv_cache_spec_kind="sliding_window", kv_cache_spec_sliding_window=128),
         "hybrid model: the same blocks in the sliding-window group 1"),
        (stored(g, [h("s0"), h("s1")], None, [], medium="CPU"),
         "offloading connector: CPU copies, empty token_ids, no parent, no extra keys"),
        (g.unknown_event("BlockPinned", block_hashes=[h("s0")], medium="GPU"),
         "an event type no decoder knows: skipped (UnknownTag)"),
        (stored(g, [h("x0")], None, tokens(9, 1), medium="CXL_POOL"),
         "a medium no decoder knows: skipped (UnknownMedium)"),
        (stored(g, [h("p0")], None, tokens(10, 1),
                extra_keys=[("img-hash-2", 7, embeds, ("img-hash-3", 2), 1.5)]),
         "one block's extra keys of every kind: str (older vLLM's bare mm identifier), int, "
         "bytes (prompt embeddings), array, float"),
        (removed(g, [h("s2")], group_idx=0), "group 0 removal"),
        (removed(g, [h("s0")], medium="CPU"), "CPU removal, no group"),
        (g.AllBlocksCleared(), "prefix-cache reset"),
    ]


def v4_map_batch():
    g = vllm_structs.GENERATIONS["v4_map_batch"]
    return g, 3, [
        (stored(g, [h("m0")], None, tokens(11, 1), group_idx=0,
                kv_cache_spec_kind="full_attention"), "a store in a map batch"),
        (removed(g, [h("m0")]), "its removal"),
    ]


def sglang():
    g = vllm_structs.GENERATIONS["sglang"]
    return g, 1, [
        (stored(g, [21, 22], None, tokens(12, 2)), "plain GPU store"),
        (g.BlockStoredWithMetadata(block_hashes=[23], parent_block_hash=22,
                                   token_ids=tokens(12, 3)[2 * BLOCK_SIZE:],
                                   block_size=BLOCK_SIZE, lora_id=None, medium="GPU",
                                   metadata=g.BlockStoredMetadata(cache_salt="tenant-a")),
         "metadata map (cache_salt) where vLLM has lora_name: not a LoRA name"),
        (stored(g, [21], None, [], medium="CPU_PINNED"), "SGLang's name for its CPU tier"),
        (removed(g, [23], medium=None), "medium left at its default (nil)"),
    ]


BATCHES = {
    "v0_int": (v0_int, 1764892800.0),
    "v1_medium": (v1_medium, 1764892801.25),
    "v2_lora_name": (v2_lora_name, 1764892802.5),
    "v3_array": (lambda: full("v3_array"), 1764892803.75),
    "v4_map": (lambda: full("v4_map"), 1764892804.125),
    "v4_map_batch": (v4_map_batch, 1764892805.5),
    "sglang": (sglang, 1764892806.0),
}


def to_json(value):
    if isinstance(value, bytes):
        return {"bytes": value.hex()}
    if isinstance(value, (list, tuple)):
        return [to_json(v) for v in value]
    if hasattr(value, "__struct_fields__"):
        out = {}
        tag = value.__struct_config__.tag
        if tag is not None:
            out["type"] = tag
        for field in value.__struct_fields__:
            out[field] = to_json(getattr(value, field))
        return out
    return value


def build(name):
    make, ts = BATCHES[name]
    gen, rank, events = make()
    batch = gen.batch(ts, [e for e, _ in events], rank)
    payload = vllm_structs.encoder().encode(batch)
    description = {
        "file": f"{name}.msgpack",
        "generation": gen.name,
        "layout": {
            "batch": "array" if gen.EventBatch.__struct_config__.array_like else "map",
            "events": "array" if gen.array_events else "map",
        },
        "ts": ts,
        "rank": rank,
        "events": [{"expect": note, "event": to_json(e)} for e, note in events],
    }
    # One line per list of numbers: token ids stay readable.
    text = re.sub(
        r"\[[-0-9.,\s]+\]",
        lambda m: "[" + ", ".join(m.group(0)[1:-1].split()).replace(",,", ",") + "]",
        json.dumps(description, indent=1),
    )
    return payload, (text + "\n").encode()


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="compare instead of writing")
    args = parser.parse_args()
    OUT.mkdir(parents=True, exist_ok=True)
    stale = []
    for name in BATCHES:
        payload, text = build(name)
        for path, data in [(OUT / f"{name}.msgpack", payload), (OUT / f"{name}.json", text)]:
            if args.check:
                if not path.exists() or path.read_bytes() != data:
                    stale.append(path)
            else:
                path.write_bytes(data)
    for path in stale:
        print(f"differs: {path.relative_to(ROOT)}", file=sys.stderr)
    return 1 if stale else 0


if __name__ == "__main__":
    sys.exit(main())
