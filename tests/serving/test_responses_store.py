"""The Responses store is bounded in entries and in bytes, the least recently used out first."""

from servelm.serving.responses_store import ResponseStore


def response(rid, text=""):
    return {"id": rid, "output": [{"type": "message", "content": [{"type": "output_text", "text": text}]}]}


def test_bounded_by_bytes_least_recently_used_out_first():
    store = ResponseStore(capacity=1000, max_bytes=30_000)
    for i in range(3):
        store.save(response(f"r{i}", "x" * 9_000), [{"role": "user", "content": "hi"}])
    assert store.conversation("r0") is not None  # r0 is now the most recently used
    store.save(response("r3", "x" * 9_000), [])
    assert store.get("r1") is None and all(store.get(r) for r in ("r0", "r2", "r3"))
    assert store.bytes <= 30_000
    store.save(response("huge", "x" * 40_000), [])  # larger than the whole bound: not kept, nothing evicted for it
    assert store.get("huge") is None and store.get("r0") is not None


def test_bounded_by_entries_and_saving_again_replaces():
    store = ResponseStore(capacity=2)
    store.save(response("a"), [])
    store.save(response("a", "again"), [])
    store.save(response("b"), [])
    assert store.get("a")["output"][0]["content"][0]["text"] == "again"
    store.save(response("c"), [])
    assert store.get("a") is None and store.get("b") and store.get("c")
    before = store.bytes
    assert store.delete("b") and store.bytes < before
