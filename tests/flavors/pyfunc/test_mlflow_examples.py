"""The code examples of MLflow's "Models From Code" guide and pyfunc reference, run as written with mlflow,
then with ``mlflow`` swapped for servelm's imports: the same predictions, from the loaded model and from
servelm's server. (Skipped where mlflow is not installed; CI's test venv has it.)"""

from __future__ import annotations

import json
import textwrap

import httpx
import pytest

mlflow = pytest.importorskip("mlflow", reason="mlflow not installed")
pd = pytest.importorskip("pandas")
np = pytest.importorskip("numpy")

from servelm.serving.routes.invocations import json_default  # noqa: E402


def _harness():
    """tests/mlflow_parity/harness.py: what "swap the imports" means, shared with the differential suite."""
    import importlib.util
    import sys
    from pathlib import Path

    path = Path(__file__).parents[2] / "mlflow_parity" / "harness.py"
    spec = importlib.util.spec_from_file_location("mlflow_parity_harness", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


swapped = _harness().swapped


@pytest.fixture(autouse=True)
def _mlflow_in_tmp(tmp_path, monkeypatch):
    """MLflow's tracking store and traces in the test's directory, not the working directory."""
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path}/mlflow.db")
    monkeypatch.chdir(tmp_path)


def plain(value):
    return json.loads(json.dumps(value, default=json_default))


def run_both(tmp_path, code: str, driver: str, files: dict[str, str] = None):
    """Run ``driver`` (which saves to MODEL_PATH and sets ``result``) with mlflow and with servelm's imports;
    ``code`` is written as model.py for models-from-code examples. Returns (mlflow result, servelm result,
    servelm model dir)."""
    results = []
    for system in ("mlflow", "servelm"):
        root = tmp_path / system
        root.mkdir()
        for name, text in (files or {}).items():
            (root / name).write_text(textwrap.dedent(text))
        if code:
            (root / "model.py").write_text(
                textwrap.dedent(code) if system == "mlflow" else swapped(textwrap.dedent(code))
            )
        source = textwrap.dedent(driver) if system == "mlflow" else swapped(textwrap.dedent(driver))
        scope = {"MODEL_PATH": str(root / "model"), "CODE_PATH": str(root / "model.py"), "ROOT": str(root)}
        exec(compile(source, f"<{system} driver>", "exec", dont_inherit=True), scope)
        results.append(plain(scope["result"]))
    return results[0], results[1], str(tmp_path / "servelm" / "model")


def served_predictions(serve, model_dir: str, body: dict):
    with serve(model_dir) as (base, _):
        reply = httpx.post(f"{base}/invocations", json=body, timeout=120)
        assert reply.status_code == 200, reply.text
        return reply.json()


# ------------------------------------------------------------------------------ Models From Code guide
MATH_MODEL = """
import mlflow
from mlflow.models import set_model
import pandas as pd


class BasicModel(mlflow.pyfunc.PythonModel):
    def exponential(self, numbers):
        return {f"{x}": 2**x for x in numbers["x"]}

    def predict(self, context, model_input) -> dict:
        return self.exponential(model_input)


set_model(BasicModel())
"""


def test_models_from_code_set_model(tmp_path, serve):
    """mlflow.models.set_model in a code file (the guide's first workflow): captured, predicted, served."""
    driver = """
        import mlflow
        import pandas as pd
        mlflow.pyfunc.save_model(MODEL_PATH, python_model=CODE_PATH, input_example=pd.DataFrame({"x": [1, 2, 4]}))
        model = mlflow.pyfunc.load_model(MODEL_PATH)
        result = model.predict(pd.DataFrame({"x": [2, 4, 6]}))
    """
    with_mlflow, with_servelm, model_dir = run_both(tmp_path, MATH_MODEL, driver)
    assert with_servelm == with_mlflow == {"2": 4, "4": 16, "6": 64}
    body = {"dataframe_split": {"columns": ["x"], "data": [[2], [4], [6]]}}
    assert served_predictions(serve, model_dir, body) == {"predictions": with_mlflow}
    # and servelm serves the directory MLflow saved, as it is
    assert served_predictions(serve, str(tmp_path / "mlflow" / "model"), body) == {"predictions": with_mlflow}


def test_models_from_code_model_config(tmp_path, serve):
    """ModelConfig(development_config=...) in the code file, the saved model_config (a YAML file) at load."""
    code = """
        import mlflow
        from mlflow.models import ModelConfig, set_model

        config = ModelConfig(development_config="dev.yaml")


        class Greeter(mlflow.pyfunc.PythonModel):
            def predict(self, context, model_input: list[str], params=None) -> list[str]:
                return [f"{config.get('greeting')}, {name}" for name in model_input]


        set_model(Greeter())
    """
    files = {"dev.yaml": "greeting: dev\n", "prod.yaml": "greeting: Hello\n"}
    driver = """
        import os
        import mlflow
        os.chdir(ROOT)
        mlflow.pyfunc.save_model(
            MODEL_PATH, python_model=CODE_PATH, model_config=os.path.join(ROOT, "prod.yaml"), input_example=["Ada"]
        )
        os.remove(os.path.join(ROOT, "dev.yaml"))
        result = mlflow.pyfunc.load_model(MODEL_PATH).predict(["Ada", "Alan"])
    """
    with_mlflow, with_servelm, model_dir = run_both(tmp_path, code, driver, files)
    assert with_servelm == with_mlflow == ["Hello, Ada", "Hello, Alan"]
    assert served_predictions(serve, model_dir, {"inputs": ["Grace"]}) == {"predictions": ["Hello, Grace"]}


def test_models_from_code_callable(tmp_path):
    """set_model(a function) (its docstring promises callables)."""
    code = """
        from mlflow.models import set_model


        def shout(model_input: list[str]) -> list[str]:
            return [s.upper() for s in model_input]


        set_model(shout)
    """
    driver = """
        import mlflow
        mlflow.pyfunc.save_model(MODEL_PATH, python_model=CODE_PATH, input_example=["a"])
        result = mlflow.pyfunc.load_model(MODEL_PATH).predict(["hi", "there"])
    """
    with_mlflow, with_servelm, _ = run_both(tmp_path, code, driver)
    assert with_servelm == with_mlflow == ["HI", "THERE"]


def test_models_from_code_langchain_runnable(tmp_path, serve):
    """A LangChain runnable as the model of a code file (the guide's third workflow)."""
    pytest.importorskip("langchain_core")
    code = """
        from langchain_core.runnables import RunnableLambda
        from mlflow.models import set_model

        chain = RunnableLambda(lambda d: f"{d['question']}? 42")
        set_model(chain)
    """
    (tmp_path / "model.py").write_text(swapped(textwrap.dedent(code)))
    from servelm.flavors.pyfunc import load_model, save_model

    save_model(str(tmp_path / "m"), python_model=str(tmp_path / "model.py"))
    model = load_model(str(tmp_path / "m"))
    assert model.predict({"question": "why"}) == "why? 42"
    assert model.predict([{"question": "a"}, {"question": "b"}]) == ["a? 42", "b? 42"]
    assert served_predictions(serve, str(tmp_path / "m"), {"inputs": [{"question": "q"}]}) == {"predictions": ["q? 42"]}


# ------------------------------------------------------------------------------ pyfunc reference
def test_add_n_dataframe_model(tmp_path, serve):
    """The pyfunc reference's AddN: a DataFrame in, a DataFrame out."""
    driver = """
        import mlflow
        import pandas as pd


        class AddN(mlflow.pyfunc.PythonModel):
            def __init__(self, n):
                self.n = n

            def predict(self, context, model_input, params=None):
                return model_input.apply(lambda column: column + self.n)


        mlflow.pyfunc.save_model(
            path=MODEL_PATH, python_model=AddN(n=5), input_example=pd.DataFrame({"a": [1, 2], "b": [3.0, 4.5]})
        )
        result = mlflow.pyfunc.load_model(MODEL_PATH).predict(pd.DataFrame({"a": [10], "b": [0.5]}))
    """
    with_mlflow, with_servelm, model_dir = run_both(tmp_path, "", driver)
    assert with_servelm == with_mlflow == [{"a": 15, "b": 5.5}]
    assert served_predictions(serve, model_dir, {"dataframe_records": [{"a": 10, "b": 0.5}]}) == {
        "predictions": with_mlflow
    }


def test_dict_input_becomes_a_dataframe(tmp_path, serve):
    """A model written for MLflow indexes its input as a DataFrame (``model_input["prompt"][0]``)."""
    driver = """
        import mlflow


        class Prompted(mlflow.pyfunc.PythonModel):
            def predict(self, context, model_input, params=None):
                return [f"echo: {model_input['prompt'][0]}"]


        mlflow.pyfunc.save_model(MODEL_PATH, python_model=Prompted(), input_example={"prompt": "hello"})
        result = mlflow.pyfunc.load_model(MODEL_PATH).predict({"prompt": "what is MLflow"})
    """
    with_mlflow, with_servelm, model_dir = run_both(tmp_path, "", driver)
    assert with_servelm == with_mlflow == ["echo: what is MLflow"]
    assert served_predictions(serve, model_dir, {"inputs": {"prompt": "x"}}) == {"predictions": ["echo: x"]}


def test_type_hinted_models(tmp_path, serve):
    """list[str] fed a DataFrame gets the values; list[pydantic model] gets model instances."""
    driver = """
        import pandas as pd
        import pydantic
        import mlflow


        class Message(pydantic.BaseModel):
            role: str
            content: str


        class Contents(mlflow.pyfunc.PythonModel):
            def predict(self, model_input: list[Message], params=None) -> list[str]:
                return [f"{m.role}: {m.content}" for m in model_input]


        class Upper(mlflow.pyfunc.PythonModel):
            def predict(self, model_input: list[str], params=None) -> list[str]:
                return [s.upper() for s in model_input]


        mlflow.pyfunc.save_model(MODEL_PATH, python_model=Contents(), input_example=[{"role": "user", "content": "hi"}])
        mlflow.pyfunc.save_model(MODEL_PATH + "-upper", python_model=Upper(), input_example=["a"])
        contents = mlflow.pyfunc.load_model(MODEL_PATH)
        upper = mlflow.pyfunc.load_model(MODEL_PATH + "-upper")
        result = [contents.predict([{"role": "user", "content": "hello"}]),
                  contents.predict(pd.DataFrame([{"role": "a", "content": "b"}])),
                  upper.predict(pd.DataFrame({"text": ["x", "y"]})),
                  upper.predict(["z"])]
    """
    with_mlflow, with_servelm, model_dir = run_both(tmp_path, "", driver)
    assert with_servelm == with_mlflow == [["user: hello"], ["a: b"], ["X", "Y"], ["Z"]]
    assert served_predictions(serve, model_dir, {"inputs": [{"role": "r", "content": "c"}]}) == {
        "predictions": ["r: c"]
    }
    assert served_predictions(serve, model_dir + "-upper", {"inputs": ["q"]}) == {"predictions": ["Q"]}
    with serve(model_dir + "-upper") as (base, _):  # as MLflow: a type-hinted model takes `inputs` only
        refused = httpx.post(f"{base}/invocations", json={"dataframe_split": {"columns": ["t"], "data": [["q"]]}})
        assert refused.status_code == 400 and "type hints" in refused.json()["error"]["message"]


def test_tensor_signature_and_numpy_output(tmp_path, serve):
    """infer_signature on float32 arrays; JSON instances cast to float32; numpy output serialized."""
    driver = """
        import numpy as np
        import mlflow
        from mlflow.models import infer_signature


        class Scale(mlflow.pyfunc.PythonModel):
            def predict(self, context, model_input, params=None):
                assert model_input.dtype == np.float32
                return {"scaled": model_input * 2, "mean": np.float32(model_input.mean())}


        x = np.array([[1.0, 2.0, 3.0, 4.0]], dtype=np.float32)
        signature = infer_signature(x, Scale().predict(None, x))
        mlflow.pyfunc.save_model(MODEL_PATH, python_model=Scale(), signature=signature)
        result = [
            signature.inputs.to_dict(),
            mlflow.pyfunc.load_model(MODEL_PATH).predict(np.array([[0.5, 1, 1.5, 2]], dtype=np.float32)),
        ]
    """
    with_mlflow, with_servelm, model_dir = run_both(tmp_path, "", driver)
    assert with_servelm == with_mlflow
    assert with_mlflow[0] == [{"type": "tensor", "tensor-spec": {"dtype": "float32", "shape": [-1, 4]}}]
    reply = served_predictions(serve, model_dir, {"instances": [[1, 2, 3, 4]]})
    assert reply == {"predictions": {"scaled": [[2.0, 4.0, 6.0, 8.0]], "mean": 2.5}}


def test_signature_api_as_mlflow_writes_it():
    """ColSpec("double", "x"), TensorSpec(np.dtype(...), shape), Schema([...]), infer_signature: the JSON MLflow
    writes."""
    from mlflow.models import infer_signature as mlflow_infer
    from mlflow.types.schema import ColSpec as MColSpec
    from mlflow.types.schema import Schema as MSchema
    from mlflow.types.schema import TensorSpec as MTensorSpec

    from servelm.flavors import ColSpec, ModelSignature, Schema, TensorSpec, infer_signature

    mine = Schema([ColSpec("double", "x"), ColSpec("string", "name", required=False)])
    theirs = MSchema([MColSpec("double", "x"), MColSpec("string", "name", required=False)])
    assert json.loads(mine.to_json()) == json.loads(theirs.to_json())
    mine_t = Schema([TensorSpec(np.dtype("float32"), (-1, 4), "a"), TensorSpec(np.dtype("int64"), (-1,), "b")])
    theirs_t = MSchema([MTensorSpec(np.dtype("float32"), (-1, 4), "a"), MTensorSpec(np.dtype("int64"), (-1,), "b")])
    assert json.loads(mine_t.to_json()) == json.loads(theirs_t.to_json())
    frame = pd.DataFrame({"x": [1.5, 2.0], "n": [1, 2], "s": ["a", "b"], "ok": [True, False]})
    for example, output in ((frame, ["a", "b"]), ({"q": "hi", "k": 3}, {"answer": "x"}), (["a", "b"], None)):
        ours = infer_signature(example, output).to_dict()
        reference = mlflow_infer(example, output).to_dict()
        assert json.loads(ours["inputs"]) == json.loads(reference["inputs"]), example
    assert isinstance(ModelSignature(mine), ModelSignature)


def test_dataframe_columns_are_checked(tmp_path):
    from servelm.flavors import SchemaEnforcementError
    from servelm.flavors.pyfunc import load_model, save_model

    class Sum(mlflow.pyfunc.PythonModel):
        def predict(self, context, model_input, params=None):
            return (model_input["a"] + model_input["b"]).tolist()

    save_model(str(tmp_path / "m"), python_model=Sum(), input_example=pd.DataFrame({"a": [1.0], "b": [2]}))
    model = load_model(str(tmp_path / "m"))
    assert model.predict(pd.DataFrame({"a": [1], "b": [2]})) == [3.0]  # int column widened to double
    with pytest.raises(SchemaEnforcementError, match=r"column 'b': expected long; values of dtype str"):
        model.predict(pd.DataFrame({"a": [1.0], "b": ["two"]}))
    with pytest.raises(SchemaEnforcementError, match=r"missing required column\(s\) \['b'\]"):
        model.predict({"a": 1.0})


def test_named_tensors(tmp_path):
    from servelm.flavors import ModelSignature, Schema, SchemaEnforcementError, TensorSpec
    from servelm.flavors.pyfunc import load_model, save_model

    class Dot(mlflow.pyfunc.PythonModel):
        def predict(self, context, model_input, params=None):
            return (model_input["a"] * model_input["b"]).sum(axis=1)

    signature = ModelSignature(
        Schema([TensorSpec(np.dtype("float32"), (-1, 2), "a"), TensorSpec(np.dtype("float32"), (-1, 2), "b")])
    )
    save_model(str(tmp_path / "m"), python_model=Dot(), signature=signature)
    model = load_model(str(tmp_path / "m"))
    out = model.predict({"a": np.array([[1, 2]], dtype=np.float32), "b": np.array([[3, 4]], dtype=np.float32)})
    assert out.tolist() == [11.0] and out.dtype == np.float32
    with pytest.raises(SchemaEnforcementError, match="takes a dict of numpy arrays"):
        model.predict({"a": [[1, 2]], "b": [[3, 4]]})  # as MLflow: lists are refused
