"""The onnx runner on an export cut at its attention nodes (``onnx_layered.py``) against the whole graph,
and ``kv_cache_dtype`` choosing between them."""

import os

import numpy as np
import pytest

pytest.importorskip("onnxruntime_genai")
pytest.importorskip("numba")

from servelm.flavors.engine.attention.bf16_intrinsics import has_bf16_dot  # noqa: E402
from servelm.flavors.engine.fixed_rows import FixedRows  # noqa: E402
from servelm.flavors.engine.runners.onnx import OrtDecoder, OrtRunner  # noqa: E402
from servelm.flavors.errors import ModelFormatError  # noqa: E402
from servelm.flavors.onnx.runtime import read_genai_config  # noqa: E402

needs_bf16 = pytest.mark.skipif(not has_bf16_dot(), reason="the cut decoder needs a CPU with avx512_bf16")


@pytest.fixture(scope="module")
def grouped_genai(tmp_path_factory):
    """A tiny Llama with grouped-query attention (4 query heads over 2 kv heads, head size 32), exported."""
    from servelm.flavors.onnx import export
    from servelm.flavors.transformers.tiny import build_tiny_model

    root = tmp_path_factory.mktemp("grouped")
    source = build_tiny_model(str(root / "hf"), hidden=128, heads=4, kv_heads=2, seed=3)
    return export(source, str(root / "genai"))


def runner(genai_dir: str, kv_cache_dtype: str, tmp_path, rows: int = 3) -> FixedRows:
    decoder = OrtDecoder(genai_dir, read_genai_config(genai_dir), 2, str(tmp_path), kv_cache_dtype)
    return FixedRows(OrtRunner(decoder), rows, 256)


def steps(run: FixedRows, prompts: list[list[int]], count: int) -> np.ndarray:
    """Logits [prompts + count * prompts, vocab]: each prompt prefilled in its row, then ``count`` greedy
    decode steps of all rows together."""
    logits = [run.forward([], [], [(row, ids, 0)])[0] for row, ids in enumerate(prompts)]
    tokens = [int(np.argmax(row)) for row in logits]
    positions = [len(ids) for ids in prompts]
    for _ in range(count):
        step = run.forward(tokens, positions, [])  # [rows, vocab]
        logits.extend(step)
        tokens, positions = [int(np.argmax(row)) for row in step], [p + 1 for p in positions]
    return np.stack(logits)


@needs_bf16
@pytest.mark.parametrize("model", ["tiny_llama_genai", "grouped_genai"])
def test_the_cut_decoder_gives_the_whole_graphs_logits(request, model, tmp_path):
    genai_dir = request.getfixturevalue(model)
    cut, whole = runner(genai_dir, "bfloat16", tmp_path), runner(genai_dir, "float32", tmp_path)
    assert cut.runner.d.layered is not None and cut.runner.d.cache_dtype == np.uint16
    assert whole.runner.d.layered is None and whole.runner.d.cache_dtype == np.float32
    prompts = [list(range(5, 45)), list(range(300, 307)), list(range(60, 160))]
    ours, theirs = steps(cut, prompts, 6), steps(whole, prompts, 6)
    # the cache rounds keys and values to bf16 (8 bits of mantissa); everything else is fp32 on both sides
    assert np.abs(ours - theirs).max() < 0.02 * np.abs(theirs).max()
    assert (ours.argmax(-1) == theirs.argmax(-1)).all()


@needs_bf16
def test_a_step_of_decode_rows_and_prompt_chunks_is_those_steps_apart(grouped_genai, tmp_path):
    together, apart = runner(grouped_genai, "bfloat16", tmp_path), runner(grouped_genai, "bfloat16", tmp_path)
    first, second, third = list(range(10, 30)), list(range(40, 90)), list(range(200, 212))
    for run in (together, apart):
        run.forward([], [], [(0, first, 0)])
    mixed = together.forward([7], [len(first)], [(1, second[:30], 0), (2, third, 0)])
    alone = np.concatenate(
        [
            apart.forward([7], [len(first)], []),
            apart.forward([], [], [(1, second[:30], 0)]),
            apart.forward([], [], [(2, third, 0)]),
        ]
    )
    assert mixed.shape == (3, together.runner.vocab_size)
    np.testing.assert_allclose(mixed, alone, rtol=0, atol=1e-4 * np.abs(alone).max())
    # a chunk continuing a prompt attends over the positions an earlier step wrote
    later = together.forward([], [], [(1, second[30:], 30)])
    fresh = runner(grouped_genai, "bfloat16", tmp_path)
    once = fresh.forward([], [], [(1, second, 0)])
    np.testing.assert_allclose(later, once, rtol=0, atol=1e-4 * np.abs(once).max())


@needs_bf16
def test_auto_cuts_the_graph_where_it_can(tiny_llama_genai, tmp_path):
    assert OrtDecoder(tiny_llama_genai, read_genai_config(tiny_llama_genai), 2, str(tmp_path)).layered is not None


def test_without_bf16_instructions_auto_runs_the_whole_graph_and_bfloat16_is_an_error(
    tiny_llama_genai, tmp_path, monkeypatch
):
    from servelm.flavors.engine.attention import bf16_intrinsics

    monkeypatch.setenv("SERVELM_CPU_FEATURES_OFF", "avx512_bf16")  # as on a CPU without it
    bf16_intrinsics.has_bf16_dot.cache_clear()
    try:
        config = read_genai_config(tiny_llama_genai)
        decoder = OrtDecoder(tiny_llama_genai, config, 2, str(tmp_path), "auto")
        assert decoder.layered is None and decoder.cache_dtype == np.float32
        with pytest.raises(ModelFormatError, match="no bf16 KV cache here: .*avx512_bf16"):
            OrtDecoder(tiny_llama_genai, config, 2, str(tmp_path), "bfloat16")
        with pytest.raises(ModelFormatError, match="kv_cache_dtype 'fp8'.*auto, bfloat16, float32"):
            OrtDecoder(tiny_llama_genai, config, 2, str(tmp_path), "fp8")
    finally:
        bf16_intrinsics.has_bf16_dot.cache_clear()


@needs_bf16
def test_the_pieces_are_written_once_and_pruned_with_their_export(tiny_llama_genai, tmp_path):
    import shutil

    from servelm.flavors.onnx.cut_graph import cut_decoder

    copy = str(tmp_path / "export")
    shutil.copytree(tiny_llama_genai, copy)
    config = read_genai_config(copy)["model"]["decoder"]
    model_path = os.path.join(copy, config["filename"])
    cache = str(tmp_path / "cache")
    cut = cut_decoder(model_path, config["outputs"]["logits"], cache)
    assert not isinstance(cut, str)
    # one piece ending at each attention, then the last layer's rest, then the vocabulary projection
    assert len(cut.pieces) == config["num_hidden_layers"] + 2
    assert [p.qkv is not None for p in cut.pieces].count(True) == config["num_hidden_layers"]
    index = os.path.join(os.path.dirname(cut.pieces[0].path), "pieces.json")
    written = os.stat(index).st_mtime_ns
    again = cut_decoder(model_path, config["outputs"]["logits"], cache)
    assert not isinstance(again, str) and again.pieces == cut.pieces
    assert os.stat(index).st_mtime_ns == written
    shutil.rmtree(copy)  # the export is gone: its pieces go at the next cut
    cut_decoder(model_path.replace(copy, tiny_llama_genai), config["outputs"]["logits"], cache)
    assert not os.path.exists(index)


def test_a_graph_without_group_query_attention_is_not_cut(tmp_path):
    import onnx
    from onnx import TensorProto, helper

    from servelm.flavors.onnx.cut_graph import cut_decoder

    graph = helper.make_graph(
        [helper.make_node("MatMul", ["hidden", "weight"], ["logits"])],
        "plain",
        [helper.make_tensor_value_info("hidden", TensorProto.FLOAT, [1, 4])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, 3])],
        [helper.make_tensor("weight", TensorProto.FLOAT, [4, 3], [0.0] * 12)],
    )
    path = str(tmp_path / "plain.onnx")
    onnx.save(helper.make_model(graph), path)
    assert cut_decoder(path, "logits", str(tmp_path / "cache")) == "no GroupQueryAttention"


@needs_bf16
def test_processes_cutting_at_once_each_get_whole_pieces(tiny_llama_genai, tmp_path):
    import subprocess
    import sys

    from servelm.flavors.onnx.cut_graph import cut_decoder

    config = read_genai_config(tiny_llama_genai)["model"]["decoder"]
    args = (os.path.join(tiny_llama_genai, config["filename"]), config["outputs"]["logits"], str(tmp_path / "cache"))
    code = (
        "import sys; from servelm.flavors.onnx.cut_graph import cut_decoder; "
        "cut = cut_decoder(*sys.argv[1:]); print(len(cut.pieces) if not isinstance(cut, str) else cut)"
    )
    runs = [subprocess.Popen([sys.executable, "-c", code, *args], stdout=subprocess.PIPE, text=True) for _ in range(3)]
    outputs = [run.communicate(timeout=600)[0].strip() for run in runs]
    assert outputs == [str(config["num_hidden_layers"] + 2)] * 3
    root = tmp_path / "cache" / "onnx-cut"
    assert len(os.listdir(root)) == 1  # no partial folder left behind
    (folder,) = root.iterdir()
    os.remove(folder / "pieces.json")  # a folder without its index is written again
    cut = cut_decoder(*args)
    assert not isinstance(cut, str) and (folder / "pieces.json").is_file()


def test_kv_cache_dtype_is_refused_where_onnxruntime_genai_generates(tiny_llama_genai, monkeypatch):
    from servelm.flavors.onnx import model

    monkeypatch.setattr(model, "runs_on_ort_directly", lambda genai_dir: False)
    with pytest.raises(ModelFormatError, match="kv_cache_dtype 'float32'.*onnxruntime-genai's own Engine"):
        model.OnnxModel(tiny_llama_genai, "cpu", kv_cache_dtype="float32")
    assert model.OnnxModel(tiny_llama_genai, "cpu", kv_cache_dtype="auto").genai is not None
