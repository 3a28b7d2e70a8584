"""The llamacpp engine beside the contract suite (test_contract.py runs every shared behaviour on it): a GGUF file
exported from the tiny Llama answers as transformers does, a bare file's tokenizer is read from the file, a model
directory keeps the GGUF as it is, and the serving process stays free of torch."""

import json
import os
import shutil

import httpx
import pytest

pytest.importorskip("xllamacpp", reason="llama.cpp's wheel (xllamacpp) is not installed here")
pytest.importorskip("torch")

ASK = [{"role": "user", "content": "hello there model"}]


def greedy(base: str, model: str, messages=ASK) -> str:
    body = {"model": model, "messages": messages, "max_tokens": 12, "temperature": 0, "ignore_eos": True}
    reply = httpx.post(f"{base}/v1/chat/completions", json=body, timeout=120)
    assert reply.status_code == 200, reply.text
    return reply.json()["choices"][0]["message"]["content"]


def test_the_gguf_export_answers_as_transformers_does(tiny_gguf_dir, tiny_llama_dir, serve):
    """The tiny Llama through llama.cpp (its GGUF export, fp32) and through the transformers engine: the same
    greedy answers, so the export (tensor layout, rotary order, tokenizer metadata) is the model. (A random
    model's logits hold near-ties that two fp32 kernels may break differently late in an answer: each answer's
    first half must match.)"""
    questions = [ASK, [{"role": "user", "content": "what is the time"}], [{"role": "user", "content": "a b c"}]]
    with serve(tiny_gguf_dir) as (base, app):
        assert "llamacpp engine" in app.state.servelm.service.kind  # a GGUF picks llama.cpp where it is installed
        ours = [greedy(base, "tiny", q) for q in questions]
    with serve(tiny_llama_dir, engine_process=False) as (base, _):
        theirs = [greedy(base, "tiny", q) for q in questions]
    assert all(a[: len(a) // 2] == b[: len(a) // 2] for a, b in zip(ours, theirs)), (ours, theirs)
    assert sum(a == b for a, b in zip(ours, theirs)) >= 2, (ours, theirs)


def test_a_bare_gguf_file_brings_its_own_tokenizer(tmp_path, tiny_gguf_dir, serve, monkeypatch):
    """A .gguf alone: its tokenizer and chat template are read from the file (once, into the cache)."""
    monkeypatch.setenv("SERVELM_CACHE", str(tmp_path / "cache"))
    bare = tmp_path / "tiny.gguf"
    shutil.copy(os.path.join(tiny_gguf_dir, "tiny.gguf"), bare)
    with serve(str(bare), served_model_name="tiny") as (base, _):
        alone = greedy(base, "tiny")
    with serve(tiny_gguf_dir) as (base, _):
        assert greedy(base, "tiny") == alone
    assert os.listdir(tmp_path / "cache" / "gguf-tokenizers")


def test_save_model_keeps_the_gguf_and_either_engine_serves_it(tmp_path, tiny_gguf_dir, serve, monkeypatch):
    """save_model of a GGUF file stores the file itself (recorded in MLmodel): llama.cpp serves it by default,
    the transformers engine from a dequantized copy (converted once, cached)."""
    from servelm.flavors import Model
    from servelm.flavors.transformers import save_model

    monkeypatch.setenv("SERVELM_CACHE", str(tmp_path / "cache"))
    (tmp_path / "download").mkdir()
    gguf = shutil.copy(os.path.join(tiny_gguf_dir, "tiny.gguf"), tmp_path / "download" / "tiny.gguf")  # the file alone
    path = tmp_path / "saved"
    save_model(str(gguf), str(path))
    flavor = Model.load(str(path)).flavors["transformers"]
    assert flavor["gguf_file"] == "model/tiny.gguf" and os.listdir(path / "model") == ["tiny.gguf"]
    with serve(str(path)) as (base, app):
        assert "llamacpp engine" in app.state.servelm.service.kind
        quantized_kept = greedy(base, "saved")
    with serve(str(path), engine="transformers", engine_process=False) as (base, app):
        assert "transformers engine" in app.state.servelm.service.kind
        dequantized = greedy(base, "saved")
    assert dequantized[: len(dequantized) // 2] == quantized_kept[: len(dequantized) // 2]  # fp32 either way here


def test_the_serving_process_needs_no_torch(tiny_gguf_dir, run_python):
    """The llamacpp service (tokenizer, chat template, engine) loads without importing torch or transformers."""
    out = run_python(f"""
        import asyncio, json, sys
        from servelm.serving.metrics import ServerMetrics
        from servelm.serving.options import EngineOptions, ServerOptions
        from servelm.serving.services.build import build_service

        service = build_service({tiny_gguf_dir!r}, ServerOptions(), EngineOptions(), ServerMetrics())
        asyncio.run(service.start())
        print(json.dumps([service.kind, "torch" in sys.modules, "transformers" in sys.modules]))
    """)
    kind, torch_loaded, transformers_loaded = json.loads(out.strip().splitlines()[-1])
    assert "llamacpp" in kind and not torch_loaded and not transformers_loaded


def test_request_body_maps_every_sampling_parameter():
    """What llama.cpp is asked for: vLLM's sampler order, min_p always sent (llama.cpp's default is 0.05),
    penalties over the whole context, 32-bit seeds, bias as pairs, grammars as llguidance Lark."""
    from servelm.flavors.engine import SamplingParams
    from servelm.flavors.engine.sample.params import GuidedDecoding
    from servelm.serving.engines.llamacpp import SAMPLERS, request_body

    params = SamplingParams(
        max_tokens=7,
        temperature=0.5,
        top_k=3,
        top_p=0.9,
        min_p=0.1,
        seed=2**40 + 5,
        stop=["x"],
        repetition_penalty=1.2,
        logit_bias={4: -1.0},
        logprobs=2,
        guided=GuidedDecoding("json_object", ""),
    )
    body = request_body([1, 2], params, 4096)
    assert body["samplers"] == SAMPLERS == ["penalties", "temperature", "min_p", "top_k", "top_p"]
    assert (body["n_predict"], body["top_k"], body["min_p"], body["seed"]) == (7, 3, 0.1, 5)
    assert body["repeat_last_n"] == 4096 and body["logit_bias"] == [[4, -1.0]] and body["n_probs"] == 2
    assert (
        body["grammar"].startswith("%llguidance {}\nstart: %json ")
        and '"whitespace_flexible": false' in body["grammar"]
    )
    plain = request_body([1], SamplingParams(), 4096)
    assert plain["min_p"] == 0.0 and plain["repeat_last_n"] == 0 and plain["top_k"] == 0 and "seed" not in plain
