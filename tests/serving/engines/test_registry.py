"""The engine registry: one line per engine, read by the options' checks, Ray's concurrency and the build."""

import pytest

from servelm.serving.engines.registry import ENGINES, REGISTRY, engine_entry, engine_only_options
from servelm.serving.options import EngineOptions


def test_every_engine_has_an_importable_builder_and_reads_real_options():
    for entry in REGISTRY:
        assert callable(entry.builder()), entry.name
        assert set(entry.options) <= set(EngineOptions.model_fields), entry.name
    assert ENGINES == tuple(entry.name for entry in REGISTRY)


def test_the_llm_engines_and_the_options_only_some_read():
    assert {e.name for e in REGISTRY if e.generates} == {"transformers", "onnx", "vllm", "llamacpp"}
    only = engine_only_options()
    assert only["quantization"] == ("transformers",)
    assert only["kv_cache_dtype"] == ("onnx",)
    assert set(only["max_num_seqs"]) == {"transformers", "onnx", "vllm", "llamacpp"}
    assert "engine" not in only


def test_ray_bounds_every_llm_engines_replica_by_its_batch():
    pytest.importorskip("ray")
    from servelm.serving.ray import LLM_ENGINES

    assert "llamacpp" in LLM_ENGINES and "pyfunc" not in LLM_ENGINES


def test_an_unknown_engine_is_named_with_the_choices():
    with pytest.raises(KeyError, match="choose one of pyfunc, transformers"):
        engine_entry("tgi")
