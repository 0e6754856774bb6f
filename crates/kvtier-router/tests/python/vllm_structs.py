"""vLLM's and SGLang's KV-event msgspec structs, one set per wire generation.

Shared by ``vllm_publisher.py`` (the end-to-end tests' stand-in engine) and
``scripts/vllm_golden.py`` (the committed golden batches), so that both encode exactly what
an engine of that generation puts on the wire: ``msgspec.msgpack.Encoder().encode(batch)``
of these structs, as ``ZmqEventPublisher._publisher_thread`` does.

The structs are written from the field order that vLLM's ``vllm/distributed/kv_events.py``
documents (and SGLang's ``python/sglang/srt/disaggregation/kv_events.py``); no engine code is
imported. Every event struct is ``tag=True`` (the tag is the class name, under the key
``"type"`` in map layouts) and ``omit_defaults=True``. Field history of ``BlockStored``:

=====================================  ==========================================
field                                  added by
=====================================  ==========================================
block_hashes, parent_block_hash,       vLLM PR #16750 (first KV events; int hashes)
token_ids, block_size, lora_id
medium                                 vLLM PR #19737 (also on BlockRemoved)
lora_name                              vLLM PR #27577
extra_keys = None                      vLLM PR #33304
group_idx = None                       vLLM PR #37688 (also on BlockRemoved)
kv_cache_spec_kind = None,             vLLM PR #40984
kv_cache_spec_sliding_window = None
=====================================  ==========================================

Block hashes are ``int`` until vLLM PR #23673 made ``ExternalBlockHash = bytes | int``
(32-byte SHA-256 digests by default). Events are ``array_like=True`` (positional arrays)
until vLLM PR #42892 switched them to tagged maps; the outer ``EventBatch`` stays
``array_like`` (``[ts, events, data_parallel_rank]``). ``omit_defaults`` drops the fields
still at their default from maps only: positional events always carry every field their
generation has (a trailing ``None`` included).

Generations (``GENERATIONS[name]``):

* ``v0_int``: PR #16750. ``[ts, events]``; ``BlockStored`` has 5 fields, ``BlockRemoved`` 1.
* ``v1_medium``: + ``medium``, + ``data_parallel_rank`` on the batch.
* ``v2_lora_name``: + ``lora_name``; bytes or int hashes.
* ``v3_array``: + ``extra_keys``, ``group_idx``, ``kv_cache_spec_kind``,
  ``kv_cache_spec_sliding_window``: the last positional generation.
* ``v4_map``: PR #42892, the same fields as tagged maps inside an ``array_like`` batch.
* ``v4_map_batch``: ``v4_map`` with the batch itself a map (``EventBatch`` declared without
  ``array_like``, as one vLLM snapshot of ``kv_events.py`` has it).
* ``sglang``: SGLang's copy: positional, int hashes, ``medium = None`` as a default, a
  ``BlockStored`` variant with a trailing ``metadata`` struct (``cache_salt``, encoded as a
  map where vLLM has ``lora_name``), and ``attn_dp_rank`` on the batch. Its media are ``GPU``,
  ``CPU_PINNED``, ``DISK`` and ``EXTERNAL``.

``Generation.unknown_event(tag, **fields)`` makes an event of a type that no decoder knows,
tagged and laid out like the generation's own events (a future engine's new event).
"""

from __future__ import annotations

from typing import Any, Optional, Union

import msgspec

IntHash = int
ExternalBlockHash = Union[bytes, int]

REQUIRED = object()

# (name, type, default): the documented order of BlockStored's fields.
_STORED = [
    ("block_hashes", list, REQUIRED),
    ("parent_block_hash", Optional[ExternalBlockHash], REQUIRED),
    ("token_ids", list[int], REQUIRED),
    ("block_size", int, REQUIRED),
    ("lora_id", Optional[int], REQUIRED),
    ("medium", Optional[str], REQUIRED),
    ("lora_name", Optional[str], REQUIRED),
    ("extra_keys", Optional[list[Optional[tuple[Any, ...]]]], None),
    ("group_idx", Optional[int], None),
    ("kv_cache_spec_kind", Optional[str], None),
    ("kv_cache_spec_sliding_window", Optional[int], None),
]
_REMOVED = [
    ("block_hashes", list, REQUIRED),
    ("medium", Optional[str], REQUIRED),
    ("group_idx", Optional[int], None),
]
_BATCH = [
    ("ts", float, REQUIRED),
    ("events", list[Any], REQUIRED),
    ("data_parallel_rank", Optional[int], None),
]


def _fields(spec, count, hash_type):
    out = []
    for name, typ, default in spec[:count]:
        if name == "block_hashes":
            typ = list[hash_type]
        elif name == "parent_block_hash":
            typ = Optional[hash_type]
        out.append((name, typ) if default is REQUIRED else (name, typ, default))
    return out


class Generation:
    """The structs of one wire generation: ``EventBatch``, ``BlockStored``,
    ``BlockRemoved``, ``AllBlocksCleared`` (and ``BlockStoredWithMetadata`` for SGLang)."""

    def __init__(self, name, *, stored, removed, batch, hash_type, array_events, array_batch,
                 stored_spec=None, removed_spec=None, batch_spec=None):
        self.name = name
        self.array_events = array_events
        self.base = msgspec.defstruct(
            "KVCacheEvent", [], tag=True, omit_defaults=True, gc=False, array_like=array_events
        )
        self.BlockStored = msgspec.defstruct(
            "BlockStored", stored_spec or _fields(_STORED, stored, hash_type), bases=(self.base,)
        )
        self.BlockRemoved = msgspec.defstruct(
            "BlockRemoved", removed_spec or _fields(_REMOVED, removed, hash_type),
            bases=(self.base,),
        )
        self.AllBlocksCleared = msgspec.defstruct("AllBlocksCleared", [], bases=(self.base,))
        self.EventBatch = msgspec.defstruct(
            "EventBatch", batch_spec or _fields(_BATCH, batch, hash_type),
            omit_defaults=True, gc=False, array_like=array_batch,
        )
        self.BlockStoredWithMetadata = None
        self._unknown = {}

    def field_names(self, struct):
        return list(struct.__struct_fields__)

    def unknown_event(self, tag, **fields):
        """An event of type ``tag``, which no decoder knows, laid out like this generation's."""
        key = (tag, tuple(fields))
        if key not in self._unknown:
            self._unknown[key] = msgspec.defstruct(tag, list(fields), bases=(self.base,))
        return self._unknown[key](**fields)

    def batch(self, ts, events, rank=None):
        """An ``EventBatch``; ``rank`` only where the generation has one."""
        names = self.field_names(self.EventBatch)
        if len(names) == 2:
            if rank is not None:
                raise ValueError(f"{self.name} batches have no data-parallel rank")
            return self.EventBatch(ts=ts, events=events)
        return self.EventBatch(**{names[0]: ts, names[1]: events, names[2]: rank})


def _sglang():
    gen = Generation(
        "sglang",
        stored=0, removed=0, batch=0, hash_type=IntHash, array_events=True, array_batch=True,
        stored_spec=[
            ("block_hashes", list[int]),
            ("parent_block_hash", Optional[int]),
            ("token_ids", list[int]),
            ("block_size", int),
            ("lora_id", Optional[int]),
            ("medium", Optional[str], None),
        ],
        removed_spec=[("block_hashes", list[int]), ("medium", Optional[str], None)],
        batch_spec=[("ts", float), ("events", list[Any]), ("attn_dp_rank", Optional[int], None)],
    )
    metadata = msgspec.defstruct(
        "BlockStoredMetadata", [("cache_salt", str)], omit_defaults=True, gc=False
    )
    gen.BlockStoredMetadata = metadata
    gen.BlockStoredWithMetadata = msgspec.defstruct(
        "BlockStoredWithMetadata",
        [("metadata", metadata)],
        bases=(gen.BlockStored,),
        tag="BlockStored",
        kw_only=True,
    )
    return gen


GENERATIONS = {
    g.name: g
    for g in [
        Generation("v0_int", stored=5, removed=1, batch=2, hash_type=IntHash,
                   array_events=True, array_batch=True),
        Generation("v1_medium", stored=6, removed=2, batch=3, hash_type=IntHash,
                   array_events=True, array_batch=True),
        Generation("v2_lora_name", stored=7, removed=2, batch=3, hash_type=ExternalBlockHash,
                   array_events=True, array_batch=True),
        Generation("v3_array", stored=11, removed=3, batch=3, hash_type=ExternalBlockHash,
                   array_events=True, array_batch=True),
        Generation("v4_map", stored=11, removed=3, batch=3, hash_type=ExternalBlockHash,
                   array_events=False, array_batch=True),
        Generation("v4_map_batch", stored=11, removed=3, batch=3, hash_type=ExternalBlockHash,
                   array_events=False, array_batch=False),
        _sglang(),
    ]
}


def encoder():
    """The encoder vLLM's publisher thread uses."""
    return msgspec.msgpack.Encoder()
