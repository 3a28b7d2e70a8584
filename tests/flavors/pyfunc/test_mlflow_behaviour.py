"""pyfunc behaves as MLflow's does, without mlflow installed: save_model's MLflow parameters (requirements
files, conda_env, model_config files, DataFrame / ndarray / bytes examples), set_model(callable), input
conversion, and one clear error where a directory needs mlflow and it is missing."""

from __future__ import annotations

import base64
import json
import os
import textwrap

import pytest
import yaml

from servelm.agents import PythonModel
from servelm.flavors import ModelFormatError, SchemaEnforcementError
from servelm.flavors.pyfunc import load_model, save_model


class Echo(PythonModel):
    def predict(self, context, model_input, params=None):
        return model_input


class Hinted(PythonModel):
    def predict(self, model_input: list[str], params=None) -> list[str]:
        return model_input


def test_requirements_file_with_r_and_c(tmp_path):
    (tmp_path / "base.txt").write_text("numpy>=1.24\n# a comment\n")
    (tmp_path / "pins.txt").write_text("numpy==2.4.6\n")
    (tmp_path / "reqs.txt").write_text("pandas\n-r base.txt\n-c pins.txt\n")
    save_model(str(tmp_path / "m"), python_model=Echo(), pip_requirements=str(tmp_path / "reqs.txt"))
    assert (tmp_path / "m" / "requirements.txt").read_text().splitlines() == [
        "pandas",
        "numpy>=1.24",
        "-c constraints.txt",
    ]
    assert (tmp_path / "m" / "constraints.txt").read_text().splitlines() == ["numpy==2.4.6"]
    conda = yaml.safe_load((tmp_path / "m" / "conda.yaml").read_text())
    assert {"pip": ["pandas", "numpy>=1.24"]} in conda["dependencies"]
    # both lists at once is ambiguous (replace or add?): refused, as MLflow refuses it
    with pytest.raises(ModelFormatError, match="only one of conda_env, pip_requirements and extra_pip_requirements"):
        save_model(str(tmp_path / "m2"), python_model=Echo(), pip_requirements=["a"], extra_pip_requirements=["b"])


def test_conda_env(tmp_path):
    env = {
        "name": "mine",
        "channels": ["conda-forge"],
        "dependencies": ["python=3.11.7", "pip", {"pip": ["servelm", "pandas==2.2"]}],
    }
    save_model(str(tmp_path / "m"), python_model=Echo(), conda_env=env)
    assert yaml.safe_load((tmp_path / "m" / "conda.yaml").read_text()) == env
    assert (tmp_path / "m" / "requirements.txt").read_text().splitlines() == ["servelm", "pandas==2.2"]
    assert yaml.safe_load((tmp_path / "m" / "python_env.yaml").read_text())["python"] == "3.11.7"
    (tmp_path / "env.yaml").write_text(yaml.safe_dump(env))
    save_model(str(tmp_path / "m2"), python_model=Echo(), conda_env=str(tmp_path / "env.yaml"))
    assert yaml.safe_load((tmp_path / "m2" / "conda.yaml").read_text()) == env
    with pytest.raises(ModelFormatError, match="only one of"):
        save_model(str(tmp_path / "m3"), python_model=Echo(), conda_env=env, pip_requirements=["x"])


def test_model_config_file_on_save_and_load(tmp_path, write_code):
    code = write_code(
        tmp_path,
        "model.py",
        """
        from servelm.agents import PythonModel
        from servelm.flavors import set_model

        class M(PythonModel):
            def load_context(self, context):
                self.config = context.model_config

            def predict(self, context, model_input, params=None):
                return self.config["greeting"]

        set_model(M())
    """,
    )
    (tmp_path / "config.yaml").write_text("greeting: hello\n")
    (tmp_path / "other.yaml").write_text("greeting: bonjour\n")
    save_model(str(tmp_path / "m"), python_model=code, model_config=str(tmp_path / "config.yaml"))
    assert load_model(str(tmp_path / "m")).predict(None) == "hello"
    assert load_model(str(tmp_path / "m"), model_config=str(tmp_path / "other.yaml")).predict(None) == "bonjour"
    with pytest.raises(ModelFormatError, match="not a dict and not an existing"):
        save_model(str(tmp_path / "m2"), python_model=code, model_config=str(tmp_path / "missing.yaml"))


def test_dataframe_ndarray_and_bytes_examples(tmp_path):
    pd = pytest.importorskip("pandas")
    np = pytest.importorskip("numpy")
    frame = pd.DataFrame({"x": [1.5, 2.5], "s": ["a", "b"]})
    save_model(str(tmp_path / "df"), python_model=Echo(), input_example=frame)
    assert json.loads((tmp_path / "df" / "input_example.json").read_text()) == {
        "columns": ["x", "s"],
        "data": [[1.5, "a"], [2.5, "b"]],
    }
    assert json.loads((tmp_path / "df" / "serving_input_example.json").read_text())["dataframe_split"]["columns"] == [
        "x",
        "s",
    ]
    model = load_model(str(tmp_path / "df"))
    assert model.metadata.signature.inputs.column_names() == ["x", "s"]
    assert model.input_example.equals(frame)
    assert model.predict({"x": 3.0, "s": "c"}).to_dict(orient="records") == [
        {"x": 3.0, "s": "c"}
    ]  # a dict becomes a one-row DataFrame
    save_model(str(tmp_path / "nd"), python_model=Echo(), input_example=np.zeros((2, 3), dtype=np.float32))
    assert json.loads((tmp_path / "nd" / "input_example.json").read_text()) == {"inputs": [[0.0] * 3] * 2}
    tensor_model = load_model(str(tmp_path / "nd"))
    assert tensor_model.predict(np.array([[1, 2, 3]], dtype=np.float32)).dtype == np.float32
    with pytest.raises(SchemaEnforcementError, match="takes a numpy array"):
        tensor_model.predict([[1, 2, 3]])  # as MLflow: a tensor model takes arrays, not lists
    with pytest.raises(SchemaEnforcementError, match="dtype float64 does not match"):
        tensor_model.predict(np.array([[1, 2, 3]], dtype=np.float64))  # and no dtype is cast
    assert load_model(str(tmp_path / "nd")).input_example.tolist() == [[0.0] * 3] * 2
    save_model(str(tmp_path / "b"), python_model=Echo(), input_example={"blob": b"\x00\x01"})
    assert json.loads((tmp_path / "b" / "input_example.json").read_text()) == {
        "blob": base64.b64encode(b"\x00\x01").decode()
    }


def test_set_model_takes_a_callable(tmp_path, write_code):
    code = write_code(
        tmp_path,
        "fn.py",
        """
        from servelm.flavors import set_model

        def double(model_input: list[int]) -> list[int]:
            return [2 * x for x in model_input]

        set_model(double)
    """,
    )
    save_model(str(tmp_path / "m"), python_model=code, input_example=[1])
    assert load_model(str(tmp_path / "m")).predict([2, 3]) == [4, 6]
    save_model(str(tmp_path / "p"), python_model=lambda xs: [x + 1 for x in xs])
    assert load_model(str(tmp_path / "p")).predict([1]) == [2]


def test_list_str_model_given_a_dataframe_gets_the_values(tmp_path):
    pd = pytest.importorskip("pandas")
    save_model(str(tmp_path / "m"), python_model=Hinted(), input_example=["a"])
    assert load_model(str(tmp_path / "m")).predict(pd.DataFrame({"text": ["x", "y"]})) == ["x", "y"]


def test_agents_and_hinted_models_skip_the_dataframe(tmp_path, chat_agent_code):
    save_model(str(tmp_path / "agent"), python_model=chat_agent_code)
    agent = load_model(str(tmp_path / "agent"))
    assert agent._convert is None and agent._input_schema is None  # the hot path: no generic work per call
    save_model(str(tmp_path / "hinted"), python_model=Hinted(), input_example=["a"])
    assert load_model(str(tmp_path / "hinted")).predict(["q"]) == ["q"]


def test_without_mlflow_a_directory_that_needs_it_says_so(tmp_path, mlflow_reference, run_python):
    """An MLflow code model (it imports mlflow) and an MLflow pickle, where mlflow cannot be imported."""
    import shutil

    shutil.copytree(mlflow_reference / "chat_agent_code", tmp_path / "code")
    shutil.copytree(mlflow_reference / "chat_agent_pickle", tmp_path / "pickle")
    # a pickle of an MLflow class: what cloudpickle writes for an instance of mlflow.pyfunc.ChatAgent's subclass
    (tmp_path / "pickle" / "python_model.pkl").write_bytes(
        b"\x80\x05\x95&\x00\x00\x00\x00\x00\x00\x00"
        b"\x8c\x10mlflow.pyfunc.xy\x94\x8c\x0bEchoChatAgt\x94\x93\x94)\x81\x94."
    )
    out = run_python(
        textwrap.dedent(f"""
        import sys
        sys.modules["mlflow"] = None  # as if mlflow were not installed
        from servelm.flavors import ModelFormatError, SchemaEnforcementError
        from servelm.flavors.pyfunc import load_model
        for name in ("code", "pickle"):
            try:
                load_model({str(tmp_path)!r} + "/" + name)
            except ModelFormatError as exc:
                print(name, "pip install mlflow" in str(exc))
    """)
    )
    assert out.split() == ["code", "True", "pickle", "True"]
    assert os.path.isdir(tmp_path / "code")


def test_a_column_model_without_pandas_says_so(tmp_path, run_python):
    """A model with a column signature takes DataFrames: without pandas, loading it says pip install pandas."""
    from servelm.flavors import ColSpec, ModelSignature, Schema

    save_model(str(tmp_path / "m"), python_model=Echo(), signature=ModelSignature(Schema([ColSpec("string", "q")])))
    out = run_python(f"""
        import sys
        sys.modules["pandas"] = None
        from servelm.flavors import ModelFormatError, SchemaEnforcementError
        from servelm.flavors.pyfunc import load_model
        try:
            load_model({str(tmp_path / "m")!r})
        except ModelFormatError as exc:
            print("pip install pandas" in str(exc))
    """)
    assert out.strip() == "True"


class Values(PythonModel):
    """Reads its input by position, as many MLflow models do (``model_input.values``)."""

    def predict(self, context, model_input, params=None):
        return model_input.values.tolist()


def test_named_columns_are_reordered_and_filtered_by_the_signature(tmp_path, serve):
    """MLflow hands a column-signature model exactly the signature's columns, in its order: a frame with them
    swapped and an extra column, records whose keys come in another order, a CSV with its index column."""
    import httpx
    import pandas as pd

    from servelm.flavors import ColSpec, ModelSignature, Schema

    signature = ModelSignature(inputs=Schema([ColSpec("double", "x1"), ColSpec("double", "x2")]))
    save_model(str(tmp_path / "m"), python_model=Values(), signature=signature)
    model = load_model(str(tmp_path / "m"))
    assert model.predict(pd.DataFrame({"x2": [2.0], "x1": [1.0], "junk": [9.0]})) == [[1.0, 2.0]]
    assert model.predict([{"x2": 2.0, "x1": 1.0}]) == [[1.0, 2.0]]
    with serve(str(tmp_path / "m")) as (base, _):
        records = httpx.post(f"{base}/invocations", json={"dataframe_records": [{"x2": 2, "x1": 1}]}, timeout=120)
        assert records.json() == {"predictions": [[1.0, 2.0]]}
        csv = pd.DataFrame({"x2": [2.0], "x1": [1.0]}).to_csv()  # a leading "Unnamed: 0" index column
        answer = httpx.post(f"{base}/invocations", content=csv, headers={"content-type": "text/csv"}, timeout=120)
        assert answer.json() == {"predictions": [[1.0, 2.0]]}


def test_mlflows_load_model_keywords_and_a_code_file_run_as_a_script(tmp_path, run_python, chat_agent_source):
    """``load_model(model_uri=..., suppress_warnings=..., dst_path=..., model_config=...)`` as MLflow names them, and
    a models-from-code file run directly (``python agent.py``): its ``set_model`` outside a load does nothing."""
    (tmp_path / "agent.py").write_text(chat_agent_source)
    save_model(str(tmp_path / "m"), python_model=str(tmp_path / "agent.py"))
    model = load_model(model_uri=str(tmp_path / "m"), suppress_warnings=True, dst_path=None, model_config=None)
    assert model.predict({"messages": [{"role": "user", "content": "hi"}]})["messages"][0]["content"] == "hi"
    run_python(f"exec(open({str(tmp_path / 'agent.py')!r}).read())")  # set_model at module level: no error
