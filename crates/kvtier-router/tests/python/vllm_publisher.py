"""A stand-in for vLLM's ZmqEventPublisher, for kvtier-router's end-to-end tests.

Reproduces the wire behaviour of ``ZmqEventPublisher`` in vLLM's
``vllm/distributed/kv_events.py`` (and SGLang's copy) with pyzmq, encoding every batch with
``msgspec.msgpack.Encoder`` from the engines' own struct definitions (``vllm_structs.py``,
next to this file), so that the tests see the bytes a real engine sends:

* PUB socket, multipart ``[topic, seq.to_bytes(8, "big"), payload]``, seq counting from 0
  (``itertools.count()``), every payload also kept in a replay buffer;
* ROUTER replay socket: a request ``[client_id, b"", start.to_bytes(8, "big")]`` is answered
  with ``[client_id, b"", seq, payload]`` for every buffered ``seq >= start`` and then
  ``[client_id, b"", (-1).to_bytes(8, "big", signed=True), b""]``.

Control lines come on stdin; the process exits on EOF (so it never outlives the test), on
``done`` and at ``--timeout``. Replay requests are served all the while.

Fixed scenario (default; ``tests/vllm_zmq.rs`` and the CLI tests compute the expected kvtier
messages from the same tokens)::

    READY                      printed once both sockets are bound
    <- "go"                    phase 1: seq 0, 1, 2; prints PHASE1_DONE
    <- "continue"              phase 2: two malformed messages (not something vLLM sends;
                               they must be counted and skipped), then seq 3, [4 skipped on
                               PUB], 5, 6, 7, 8; prints PHASE2_DONE
    <- "done" / EOF / timeout  exit

With ``--drop-from-buffer`` the skipped batch is also left out of the replay buffer, as if
``buffer_steps`` had been exceeded, so the gap cannot be repaired. The scenario mixes the
positional generation ``v2_lora_name`` with the tagged-map generation ``v4_map`` (see
``vllm_structs.py``), bytes hashes with ints, including a u64 above 2**63 and a negative i64.

Scripted mode (``--scripted``): after READY, every stdin line is one JSON command, answered
by one stdout line::

    {"op": "publish", "generation": "v4_map", "events": [EVENT, ...],
     "rank": 0, "live": true, "buffered": true}          -> PUBLISHED <seq>
    {"op": "publish_raw", "payload_hex": "c1", "live": true, "buffered": true}
                                                          -> PUBLISHED <seq>
    {"op": "restart"}                                     -> RESTARTED
    {"op": "done"}                                        (exit)
    anything malformed                                    -> ERROR <reason>

``EVENT`` is ``{"type": "BlockStored", "block_hashes": [...], ...}`` with the field names of
``vllm_structs``; a hash or an extra key given as ``{"bytes": "<hex>"}`` is bytes, every
other JSON value is itself. Fields the generation has but the event omits are ``None``
(or their declared default); fields it does not have are an error. A type other than
``BlockStored``, ``BlockRemoved`` and ``AllBlocksCleared`` is encoded as an unknown event of
that tag, laid out like the generation's events. ``rank`` defaults to ``--dp-rank``;
``live: false`` skips the PUB socket (a lost message), ``buffered: false`` keeps the batch out
of the replay buffer (history beyond ``buffer_steps``). ``publish_raw`` publishes the given
bytes as the payload (an undecodable batch). ``restart`` is an engine restart: both sockets
are closed and bound again on the same ports, the sequence starts over at 0 and the replay
buffer is emptied.
"""

import argparse
import json
import queue
import sys
import threading
import time

import zmq

import vllm_structs

END_SEQ = (-1).to_bytes(8, "big", signed=True)
BLOCK_SIZE = 4
ARRAY = vllm_structs.GENERATIONS["v2_lora_name"]
MAP = vllm_structs.GENERATIONS["v4_map"]


def tokens(seed, blocks):
    """Block-aligned token ids; the Rust test has the same function."""
    return [seed * 1000 + t for t in range(blocks * BLOCK_SIZE)]


def stored_array(hashes, parent, toks, lora_id=None, medium="GPU"):
    return ARRAY.BlockStored(
        block_hashes=hashes, parent_block_hash=parent, token_ids=toks, block_size=BLOCK_SIZE,
        lora_id=lora_id, medium=medium, lora_name=None,
    )


def stored_map(hashes, parent, toks, lora_name=None, group_idx=0, kind="full_attention"):
    return MAP.BlockStored(
        block_hashes=hashes, parent_block_hash=parent, token_ids=toks, block_size=BLOCK_SIZE,
        lora_id=None, medium="GPU", lora_name=lora_name, extra_keys=[None] * len(hashes),
        group_idx=group_idx, kv_cache_spec_kind=kind,
    )


def removed_array(hashes, medium="GPU"):
    return ARRAY.BlockRemoved(block_hashes=hashes, medium=medium)


def removed_map(hashes, medium="GPU"):
    return MAP.BlockRemoved(block_hashes=hashes, medium=medium, group_idx=0)


def h(name):
    """A 32-byte block hash, as newer vLLM publishes (sha256 digests)."""
    return name.encode().ljust(32, b"\0")


A, B, C, D, E = (tokens(s, n) for s, n in [(1, 4), (2, 2), (3, 3), (4, 1), (5, 2)])
BIG = 2**64 - 5  # above i64::MAX: msgpack uint64
NEG = -7  # msgpack int64

PHASE1 = [
    # seq 0: chain A blocks 0..2 (bytes hashes, positional events)
    [stored_array([h("a0"), h("a1"), h("a2")], None, A[: 3 * BLOCK_SIZE])],
    # seq 1: chain A block 3 (map layout, parent by bytes)
    [stored_map([h("a3")], h("a2"), A[3 * BLOCK_SIZE :])],
    # seq 2: chain B under a LoRA (int hashes), plus a sliding-window group's copy (filtered)
    [
        stored_map([BIG, NEG], None, B, lora_name="sql-adapter"),
        stored_map([999], None, D, group_idx=1, kind="sliding_window"),
    ],
]

PHASE2 = [
    # seq 3
    [removed_array([h("a3")])],
    # seq 4: NOT published live; chain C branches off A after block a1
    [stored_map([h("c0"), h("c1")], h("a1"), C[: 2 * BLOCK_SIZE])],
    # seq 5: C's last block needs seq 4; an unknown removal; a store under an unknown parent
    [
        stored_array([12345], h("c1"), C[2 * BLOCK_SIZE :]),
        removed_array([424242]),
        stored_array([h("d0")], 777777, D),
    ],
    # seq 6
    [removed_map([NEG]), removed_array([h("c1"), 12345])],
    # seq 7
    [ARRAY.AllBlocksCleared()],
    # seq 8: a3's parent chain is gone after the clear; a fresh root is fine
    [stored_array([h("e0")], h("a0"), E[:BLOCK_SIZE]), stored_map([h("e1")], None, E[BLOCK_SIZE:])],
]
SKIPPED_SEQ = 4


class Publisher:
    def __init__(self, pub_port, replay_port, topic, dp_rank):
        self.ctx = zmq.Context()
        self.ports = (pub_port, replay_port)
        self.topic = topic.encode()
        self.dp_rank = dp_rank
        self.encoder = vllm_structs.encoder()
        self.bind()

    def bind(self):
        self.pub = self.ctx.socket(zmq.PUB)
        self.pub.setsockopt(zmq.LINGER, 0)
        self.pub.bind(f"tcp://127.0.0.1:{self.ports[0]}")
        self.replay = self.ctx.socket(zmq.ROUTER)
        self.replay.setsockopt(zmq.LINGER, 0)
        self.replay.bind(f"tcp://127.0.0.1:{self.ports[1]}")
        self.seq = 0
        self.buffer = []  # (seq, payload)

    def restart(self):
        """An engine restart: fresh sockets on the same ports, seq from 0, empty buffer."""
        self.pub.close(0)
        self.replay.close(0)
        deadline = time.monotonic() + 5
        while True:
            try:
                self.bind()
                return
            except zmq.ZMQError:
                # The old sockets' ports are released asynchronously by zmq's I/O thread.
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)

    def encode(self, generation, events, rank):
        return self.encoder.encode(generation.batch(time.time(), events, rank))

    def publish_payload(self, payload, live=True, buffered=True):
        seq = self.seq
        self.seq += 1
        if live:
            self.pub.send_multipart((self.topic, seq.to_bytes(8, "big"), payload))
        if buffered:
            self.buffer.append((seq, payload))
        return seq

    def publish_junk(self):
        """Malformed messages that consume no sequence number."""
        self.pub.send_multipart((self.topic, b"junk"))
        self.pub.send_multipart((self.topic, (10**6).to_bytes(8, "big"), b"\xc1 not msgpack"))

    def serve_replay(self, timeout_ms):
        """Answers replay requests for up to timeout_ms (like _service_replay)."""
        if not self.replay.poll(timeout_ms):
            return
        frame = self.replay.recv_multipart()
        if len(frame) != 3:
            print(f"invalid replay request: {frame!r}", file=sys.stderr, flush=True)
            return
        client_id, _, start_seq_bytes = frame
        start_seq = int.from_bytes(start_seq_bytes, "big")
        for seq, buf in self.buffer:
            if seq >= start_seq:
                self.replay.send_multipart((client_id, b"", seq.to_bytes(8, "big"), buf))
        self.replay.send_multipart((client_id, b"", END_SEQ, b""))
        print(f"REPLAYED from {start_seq}", flush=True)

    def close(self):
        self.pub.close(0)
        self.replay.close(0)
        self.ctx.term()


def from_json(value):
    """A scripted event's JSON value as Python: ``{"bytes": hex}`` is bytes, the rest is
    itself (lists stand for tuples too: msgspec encodes both as arrays)."""
    if isinstance(value, dict) and set(value) == {"bytes"}:
        return bytes.fromhex(value["bytes"])
    if isinstance(value, list):
        return [from_json(v) for v in value]
    if isinstance(value, dict):
        return {k: from_json(v) for k, v in value.items()}
    return value


def scripted_event(generation, spec):
    spec = from_json(spec)
    tag = spec.pop("type")
    struct = {
        "BlockStored": generation.BlockStored,
        "BlockRemoved": generation.BlockRemoved,
        "AllBlocksCleared": generation.AllBlocksCleared,
    }.get(tag)
    if struct is None:
        return generation.unknown_event(tag, **spec)
    names = generation.field_names(struct)
    unknown = [k for k in spec if k not in names]
    if unknown:
        raise ValueError(f"{generation.name} {tag} has no field(s) {unknown}")
    required = names[: len(names) - len(struct.__struct_defaults__)]
    args = {name: None for name in required}
    args.update(spec)
    return struct(**args)


def run_command(publisher, line):
    """Runs one scripted command; returns the reply line, or None for `done`."""
    command = json.loads(line)
    op = command.get("op")
    if op == "done":
        return None
    if op == "restart":
        publisher.restart()
        return "RESTARTED"
    live = command.get("live", True)
    buffered = command.get("buffered", True)
    if op == "publish":
        generation = vllm_structs.GENERATIONS[command["generation"]]
        events = [scripted_event(generation, e) for e in command["events"]]
        rank = command.get("rank", publisher.dp_rank)
        payload = publisher.encode(generation, events, rank)
    elif op == "publish_raw":
        payload = bytes.fromhex(command["payload_hex"])
    else:
        raise ValueError(f"unknown op {op!r}")
    return f"PUBLISHED {publisher.publish_payload(payload, live, buffered)}"


def stdin_lines(out):
    for line in sys.stdin:
        out.put(line.strip())
    out.put(None)  # EOF: the test is gone


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--pub-port", type=int, required=True)
    parser.add_argument("--replay-port", type=int, required=True)
    parser.add_argument("--topic", default="kv-events")
    parser.add_argument("--dp-rank", type=int, default=0)
    parser.add_argument("--timeout", type=float, default=60.0)
    parser.add_argument("--drop-from-buffer", action="store_true")
    parser.add_argument("--scripted", action="store_true")
    args = parser.parse_args()

    deadline = time.monotonic() + args.timeout
    commands = queue.Queue()
    threading.Thread(target=stdin_lines, args=(commands,), daemon=True).start()
    publisher = Publisher(args.pub_port, args.replay_port, args.topic, args.dp_rank)
    print("READY", flush=True)

    def next_line():
        """Serves replays until a line arrives; None on EOF or timeout."""
        while time.monotonic() < deadline:
            publisher.serve_replay(20)
            try:
                return commands.get_nowait()
            except queue.Empty:
                continue
        print("publisher: timed out", file=sys.stderr, flush=True)
        return None

    def wait_for(word):
        """Serves replays until `word` arrives; False on EOF or timeout."""
        while True:
            line = next_line()
            if line is None:
                return False
            if line == word:
                return True

    try:
        if args.scripted:
            while (line := next_line()) is not None:
                try:
                    reply = run_command(publisher, line)
                except Exception as e:  # a broken command is the test's bug: say which
                    reply = f"ERROR {type(e).__name__}: {e}"
                if reply is None:
                    return 0
                print(reply, flush=True)
            return 0
        if not wait_for("go"):
            return 1
        for events in PHASE1:
            publisher.publish_payload(publisher.encode(MAP, events, args.dp_rank))
        print("PHASE1_DONE", flush=True)
        if not wait_for("continue"):
            return 1
        publisher.publish_junk()
        for seq_offset, events in enumerate(PHASE2):
            seq = len(PHASE1) + seq_offset
            skipped = seq == SKIPPED_SEQ
            publisher.publish_payload(
                publisher.encode(MAP, events, args.dp_rank),
                live=not skipped,
                buffered=not (skipped and args.drop_from_buffer),
            )
        print("PHASE2_DONE", flush=True)
        wait_for("done")
        return 0
    finally:
        publisher.close()


if __name__ == "__main__":
    sys.exit(main())
