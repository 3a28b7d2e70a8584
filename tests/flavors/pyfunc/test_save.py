"""python_function save_model: code models as text, cloudpickled objects with type-hint signatures,
callables, MLflow's directory layout, and a failed save leaving nothing behind."""

import json
import os

import pytest
import yaml

from servelm.agents import PythonModel
from servelm.flavors import Model, ModelFormatError
from servelm.flavors.pyfunc import load_model, save_model


def test_code_model_is_stored_as_text_not_pickle(tmp_path, chat_agent_code):
    save_model(str(tmp_path / "m"), python_model=chat_agent_code)
    files = set(os.listdir(tmp_path / "m"))
    assert "echo_chat_agent.py" in files and "python_model.pkl" not in files


class Upper(PythonModel):
    def predict(self, model_input: list[str], params=None) -> list[str]:
        return [s.upper() for s in model_input]


def test_cloudpickle_round_trip_in_subprocess(tmp_path, run_python):
    save_model(str(tmp_path / "m"), python_model=Upper(), input_example=["a", "b"])
    out = run_python(f"""
        from servelm.flavors.pyfunc import load_model
        m = load_model({str(tmp_path / "m")!r})
        print(m.predict(["x", "y"]), m.input_example)
    """)
    assert out.strip() == "['X', 'Y'] ['a', 'b']"
    mlmodel = yaml.safe_load((tmp_path / "m" / "MLmodel").read_text())
    assert mlmodel["is_signature_from_type_hint"] is True
    assert mlmodel["signature"]["inputs"] == '[{"type": "string", "required": true}]'


def test_callable_is_wrapped(tmp_path):
    save_model(str(tmp_path / "m"), python_model=lambda xs: [x * 2 for x in xs])
    assert load_model(str(tmp_path / "m")).predict([1, 2]) == [2, 4]


def test_layout_matches_mlflow_reference(
    tmp_path, chat_agent_code, responses_agent_code, chat_model_code, mlflow_reference
):
    for name, code in (
        ("chat_agent_code", chat_agent_code),
        ("responses_agent_code", responses_agent_code),
        ("chat_model_code", chat_model_code),
    ):
        ours = tmp_path / name
        save_model(str(ours), python_model=code)
        ref = yaml.safe_load((mlflow_reference / name / "MLmodel").read_text())
        mine = yaml.safe_load((ours / "MLmodel").read_text())
        assert set(ref) - {"mlflow_version"} <= set(mine), name
        assert set(ref["flavors"]["python_function"]) - {"loader_module"} <= set(mine["flavors"]["python_function"])
        assert mine["metadata"]["task"] == ref["metadata"]["task"]
        ref_files = {f for f in os.listdir(mlflow_reference / name)}
        assert ref_files <= set(os.listdir(ours)), ref_files - set(os.listdir(ours))
        ref_cols = {c.get("name") for c in json.loads(ref["signature"]["inputs"])}
        my_cols = {c.get("name") for c in json.loads(mine["signature"]["inputs"])}
        assert (
            ref_cols
            - {"background", "metadata", "parallel_tool_calls", "reasoning", "store", "text", "truncation", "user"}
            <= my_cols
        )


def test_failed_save_leaves_nothing(tmp_path):
    (tmp_path / "broken.py").write_text("raise RuntimeError('boom')\n")
    with pytest.raises(ModelFormatError, match="boom"):
        save_model(str(tmp_path / "m"), python_model=str(tmp_path / "broken.py"))
    assert not any(p.name.startswith("m") for p in tmp_path.iterdir())


def test_a_model_failing_its_input_example_is_saved_with_a_warning(tmp_path, caplog):
    """As MLflow: the example may need what only serving has (a GPU, a secret), so a failure is a warning."""

    class Broken(PythonModel):
        def predict(self, context, model_input, params=None):
            raise RuntimeError("boom")

    save_model(str(tmp_path / "m"), python_model=Broken(), input_example=["x"])
    assert "the model failed on its input example: RuntimeError: boom" in caplog.text
    assert (tmp_path / "m" / "input_example.json").exists() and Model.load(str(tmp_path / "m")).signature is None
