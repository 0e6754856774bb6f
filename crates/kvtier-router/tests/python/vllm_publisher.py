"""A stand-in for vLLM's ZmqEventPublisher, for kvtier-router's tests/vllm_zmq.rs.

Reproduces the wire behaviour of ``ZmqEventPublisher`` in vLLM's
``vllm/distributed/kv_events.py`` (and SGLang's copy in
``python/sglang/srt/disaggregation/kv_events.py``) with pyzmq + msgpack only, so the test
needs neither vLLM nor msgspec:

* PUB socket, multipart ``[topic, seq.to_bytes(8, "big"), msgpack(batch)]``, seq counting
  from 0 (``itertools.count()``), every payload also kept in a replay buffer;
* ROUTER replay socket: a request ``[client_id, b"", start.to_bytes(8, "big")]`` is answered
  with ``[client_id, b"", seq, payload]`` for every buffered ``seq >= start`` and then
  ``[client_id, b"", (-1).to_bytes(8, "big", signed=True), b""]``;
* batch = ``[ts, events, data_parallel_rank]`` (msgspec ``array_like=True``); events in both
  layouts vLLM has used: tagged arrays (``array_like=True``, before vLLM PR #42892) and tagged
  maps with a ``"type"`` key (after it). Block hashes as bytes (newer vLLM) and as ints,
  including a u64 above 2**63 and a negative i64.

Scenario (the Rust test computes the expected kvtier messages from the same tokens)::

    READY                      printed once both sockets are bound
    <- "go"                    phase 1: seq 0, 1, 2
    <- "continue"              phase 2: two malformed messages (not something vLLM sends;
                               they must be counted and skipped), then seq 3, [4 skipped on
                               PUB], 5, 6, 7, 8; prints PHASE2_DONE
    <- "done" / EOF / timeout  exit (replay requests are served until then)

With ``--drop-from-buffer`` the skipped batch is also left out of the replay buffer, as if
``buffer_steps`` had been exceeded, so the gap cannot be repaired.

Control lines come on stdin; the process exits on EOF, so it never outlives the test.
"""

import argparse
import queue
import sys
import threading
import time

import msgpack
import zmq

END_SEQ = (-1).to_bytes(8, "big", signed=True)
BLOCK_SIZE = 4


def tokens(seed, blocks):
    """Block-aligned token ids; the Rust test has the same function."""
    return [seed * 1000 + t for t in range(blocks * BLOCK_SIZE)]


def stored_array(hashes, parent, toks, lora_id=None, medium="GPU"):
    # Legacy positional layout: tag, block_hashes, parent_block_hash, token_ids, block_size,
    # lora_id, medium (older vLLM stops here; newer appends lora_name, ...).
    return ["BlockStored", hashes, parent, toks, BLOCK_SIZE, lora_id, medium]


def stored_map(hashes, parent, toks, lora_name=None, group_idx=0, kind="full_attention"):
    # Current vLLM: a tagged map; omit_defaults drops fields still at their default.
    event = {
        "type": "BlockStored",
        "block_hashes": hashes,
        "parent_block_hash": parent,
        "token_ids": toks,
        "block_size": BLOCK_SIZE,
        "lora_id": None,
        "medium": "GPU",
        "lora_name": lora_name,
        "extra_keys": [None] * len(hashes),
        "group_idx": group_idx,
        "kv_cache_spec_kind": kind,
    }
    return event


def removed_array(hashes, medium="GPU"):
    return ["BlockRemoved", hashes, medium]


def removed_map(hashes, medium="GPU"):
    return {"type": "BlockRemoved", "block_hashes": hashes, "medium": medium, "group_idx": 0}


def h(name):
    """A 32-byte block hash, as newer vLLM publishes (sha256 digests)."""
    return name.encode().ljust(32, b"\0")


A, B, C, D, E = (tokens(s, n) for s, n in [(1, 4), (2, 2), (3, 3), (4, 1), (5, 2)])
BIG = 2**64 - 5  # above i64::MAX: msgpack uint64
NEG = -7  # msgpack int64

PHASE1 = [
    # seq 0: chain A blocks 0..2 (bytes hashes, legacy arrays)
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
    [["AllBlocksCleared"]],
    # seq 8: a3's parent chain is gone after the clear; a fresh root is fine
    [stored_array([h("e0")], h("a0"), E[:BLOCK_SIZE]), stored_map([h("e1")], None, E[BLOCK_SIZE:])],
]
SKIPPED_SEQ = 4


class Publisher:
    def __init__(self, pub_port, replay_port, topic, dp_rank):
        self.ctx = zmq.Context()
        self.pub = self.ctx.socket(zmq.PUB)
        self.pub.setsockopt(zmq.LINGER, 0)
        self.pub.bind(f"tcp://127.0.0.1:{pub_port}")
        self.replay = self.ctx.socket(zmq.ROUTER)
        self.replay.setsockopt(zmq.LINGER, 0)
        self.replay.bind(f"tcp://127.0.0.1:{replay_port}")
        self.topic = topic.encode()
        self.dp_rank = dp_rank
        self.seq = 0
        self.buffer = []  # (seq, payload)

    def publish(self, events, live=True, buffered=True):
        seq = self.seq
        self.seq += 1
        payload = msgpack.packb([time.time(), events, self.dp_rank], use_bin_type=True)
        if live:
            self.pub.send_multipart((self.topic, seq.to_bytes(8, "big"), payload))
        if buffered:
            self.buffer.append((seq, payload))

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
    args = parser.parse_args()

    deadline = time.monotonic() + args.timeout
    commands = queue.Queue()
    threading.Thread(target=stdin_lines, args=(commands,), daemon=True).start()
    publisher = Publisher(args.pub_port, args.replay_port, args.topic, args.dp_rank)
    print("READY", flush=True)

    def wait_for(word):
        """Serves replays until `word` arrives; False on EOF or timeout."""
        while time.monotonic() < deadline:
            publisher.serve_replay(20)
            try:
                line = commands.get_nowait()
            except queue.Empty:
                continue
            if line is None:
                return False
            if line == word:
                return True
        print("publisher: timed out", file=sys.stderr, flush=True)
        return False

    try:
        if not wait_for("go"):
            return 1
        for events in PHASE1:
            publisher.publish(events)
        print("PHASE1_DONE", flush=True)
        if not wait_for("continue"):
            return 1
        publisher.publish_junk()
        for seq_offset, events in enumerate(PHASE2):
            seq = len(PHASE1) + seq_offset
            skipped = seq == SKIPPED_SEQ
            publisher.publish(
                events, live=not skipped, buffered=not (skipped and args.drop_from_buffer)
            )
        print("PHASE2_DONE", flush=True)
        wait_for("done")
        return 0
    finally:
        publisher.close()


if __name__ == "__main__":
    sys.exit(main())
