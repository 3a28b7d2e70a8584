"""python_function flavor: save/load round trips on disk, in fresh subprocesses, MLflow layout."""

import json
import os
import threading

import pytest
import yaml

from conftest import REFERENCE, run_python
from servelm.agents import PythonModel
from servelm.flavors import Model, ModelFormatError
from servelm.flavors.pyfunc import load_model, save_model


def test_chat_agent_from_code_round_trip_in_subprocess(tmp_path, chat_agent_code):
    save_model(str(tmp_path / "m"), python_model=chat_agent_code)
    out = run_python(f"""
        import json
        from servelm.flavors.pyfunc import load_model
        m = load_model({str(tmp_path / 'm')!r})
        print(json.dumps(m.predict({{"messages": [{{"role": "user", "content": "hello world"}}]}})))
        print(json.dumps(list(m.predict_stream({{"messages": [{{"role": "user", "content": "hello world"}}]}}))))
        print(m.metadata.task)
    """)
    reply, chunks, task = out.strip().splitlines()
    assert json.loads(reply)["messages"][0]["content"] == "hello world"
    assert [c["delta"]["content"] for c in json.loads(chunks)] == ["hello ", "world "]
    assert task == "agent/v2/chat"


def test_code_model_is_stored_as_text_not_pickle(tmp_path, chat_agent_code):
    save_model(str(tmp_path / "m"), python_model=chat_agent_code)
    files = set(os.listdir(tmp_path / "m"))
    assert "echo_chat_agent.py" in files and "python_model.pkl" not in files


class Upper(PythonModel):
    def predict(self, model_input: list[str], params=None) -> list[str]:
        return [s.upper() for s in model_input]


def test_cloudpickle_round_trip_in_subprocess(tmp_path):
    save_model(str(tmp_path / "m"), python_model=Upper(), input_example=["a", "b"])
    out = run_python(f"""
        from servelm.flavors.pyfunc import load_model
        m = load_model({str(tmp_path / 'm')!r})
        print(m.predict(["x", "y"]), m.input_example)
    """)
    assert out.strip() == "['X', 'Y'] ['a', 'b']"
    mlmodel = yaml.safe_load((tmp_path / "m" / "MLmodel").read_text())
    assert mlmodel["is_signature_from_type_hint"] is True
    assert mlmodel["signature"]["inputs"] == '[{"type": "string", "required": true}]'


def test_callable_is_wrapped(tmp_path):
    save_model(str(tmp_path / "m"), python_model=lambda xs: [x * 2 for x in xs])
    assert load_model(str(tmp_path / "m")).predict([1, 2]) == [2, 4]


def test_layout_matches_mlflow_reference(tmp_path, chat_agent_code, responses_agent_code, chat_model_code):
    for name, code in (("chat_agent_code", chat_agent_code), ("responses_agent_code", responses_agent_code), ("chat_model_code", chat_model_code)):
        ours = tmp_path / name
        save_model(str(ours), python_model=code)
        ref = yaml.safe_load((REFERENCE / name / "MLmodel").read_text())
        mine = yaml.safe_load((ours / "MLmodel").read_text())
        assert set(ref) - {"mlflow_version"} <= set(mine), name
        assert set(ref["flavors"]["python_function"]) - {"loader_module"} <= set(mine["flavors"]["python_function"])
        assert mine["metadata"]["task"] == ref["metadata"]["task"]
        ref_files = {f for f in os.listdir(REFERENCE / name)}
        assert ref_files <= set(os.listdir(ours)), ref_files - set(os.listdir(ours))
        ref_cols = {c.get("name") for c in json.loads(ref["signature"]["inputs"])}
        my_cols = {c.get("name") for c in json.loads(mine["signature"]["inputs"])}
        assert ref_cols - {"background", "metadata", "parallel_tool_calls", "reasoning", "store", "text", "truncation", "user"} <= my_cols


def test_artifacts_code_paths_and_model_config(tmp_path):
    (tmp_path / "lib").mkdir()
    (tmp_path / "lib" / "helper_mod_xyz.py").write_text("def shout(s):\n    return s.upper() + '!'\n")
    (tmp_path / "vocab.txt").write_text("hello\n")
    (tmp_path / "model.py").write_text(
        "from servelm.agents import PythonModel\nfrom servelm.flavors import set_model\nimport helper_mod_xyz\n"
        "class M(PythonModel):\n"
        "    def load_context(self, context):\n"
        "        self.word = open(context.artifacts['vocab']).read().strip()\n"
        "        self.suffix = context.model_config['suffix']\n"
        "    def predict(self, context, model_input, params=None):\n"
        "        return helper_mod_xyz.shout(self.word) + self.suffix\n"
        "set_model(M())\n"
    )
    import sys

    sys.path.insert(0, str(tmp_path / "lib"))  # validation at save imports it from code_paths
    try:
        save_model(str(tmp_path / "m"), python_model=str(tmp_path / "model.py"), artifacts={"vocab": str(tmp_path / "vocab.txt")},
                   code_paths=[str(tmp_path / "lib" / "helper_mod_xyz.py")], model_config={"suffix": "?"})
    finally:
        sys.path.remove(str(tmp_path / "lib"))
    out = run_python(f"""
        import warnings
        from servelm.flavors.pyfunc import load_model
        print(load_model({str(tmp_path / 'm')!r}).predict(None))
        with warnings.catch_warnings(record=True) as w:
            warnings.simplefilter("always")
            m = load_model({str(tmp_path / 'm')!r}, model_config={{"suffix": "#", "typo": 1}})
        print(m.predict(None), m.model_config, "typo" in str(w[0].message))
    """, cwd=str(tmp_path))
    assert out.splitlines() == ["HELLO!?", "HELLO!# {'suffix': '#'} True"]


def test_env_files_and_secret_names(tmp_path):
    (tmp_path / "model.py").write_text(
        "import os\nimport yaml\nfrom servelm.agents import PythonModel\nfrom servelm.flavors import set_model\n"
        "class M(PythonModel):\n"
        "    def predict(self, context, model_input, params=None):\n"
        "        return os.environ.get('MY_SERVICE_API_KEY', 'none') and os.getenv('HOME') and 1\n"
        "set_model(M())\n"
    )
    save_model(str(tmp_path / "m"), python_model=str(tmp_path / "model.py"), input_example=["x"], extra_pip_requirements=["extra-pkg==1"])
    reqs = (tmp_path / "m" / "requirements.txt").read_text().splitlines()
    assert reqs[0].startswith("servelm==") and any(r.lower().startswith("pyyaml==") for r in reqs) and reqs[-1] == "extra-pkg==1"
    assert (tmp_path / "m" / "environment_variables.txt").read_text().splitlines()[1:] == ["MY_SERVICE_API_KEY"]
    assert yaml.safe_load((tmp_path / "m" / "python_env.yaml").read_text())["dependencies"] == ["-r requirements.txt"]
    assert "conda.yaml" in os.listdir(tmp_path / "m")


def test_set_model_is_thread_safe(tmp_path):
    paths = []
    for i in range(8):
        p = tmp_path / f"m{i}.py"
        p.write_text(
            "import time\nfrom servelm.agents import PythonModel\nfrom servelm.flavors import set_model\n"
            f"class M(PythonModel):\n    def predict(self, context, model_input, params=None):\n        return {i}\n"
            "time.sleep(0.01)\nm = M()\ntime.sleep(0.01)\nset_model(m)\ntime.sleep(0.01)\n"
        )
        paths.append(p)
    errors = []

    def save(i):
        try:
            save_model(str(tmp_path / f"out{i}"), python_model=str(paths[i]))
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=save, args=(i,)) for i in range(8)]
    [t.start() for t in threads]
    [t.join() for t in threads]
    assert not errors
    assert [load_model(str(tmp_path / f"out{i}")).predict(None) for i in range(8)] == list(range(8))


def test_bad_directories_give_one_clear_error(tmp_path, chat_agent_code):
    with pytest.raises(ModelFormatError, match="no MLmodel"):
        load_model(str(tmp_path))
    save_model(str(tmp_path / "m"), python_model=chat_agent_code)
    (tmp_path / "m" / "echo_chat_agent.py").write_text("this is not python(")
    with pytest.raises(ModelFormatError, match="echo_chat_agent.py failed while loading: SyntaxError"):
        load_model(str(tmp_path / "m"))
    (tmp_path / "m" / "echo_chat_agent.py").unlink()
    with pytest.raises(ModelFormatError, match="echo_chat_agent.py is missing"):
        load_model(str(tmp_path / "m"))
    mlmodel = tmp_path / "m" / "MLmodel"
    data = yaml.safe_load(mlmodel.read_text())
    data["flavors"] = {"weird": {}}
    mlmodel.write_text(yaml.safe_dump(data))
    with pytest.raises(ModelFormatError, match="no 'python_function' flavor; it has: weird"):
        load_model(str(tmp_path / "m"))


def test_missing_artifact_is_named(tmp_path):
    (tmp_path / "a.txt").write_text("x")
    save_model(str(tmp_path / "m"), python_model=Upper(), artifacts={"a": str(tmp_path / "a.txt")})
    os.remove(tmp_path / "m" / "artifacts" / "a.txt")
    with pytest.raises(ModelFormatError, match="artifact 'a' is missing"):
        load_model(str(tmp_path / "m"))


def test_failed_save_leaves_nothing(tmp_path):
    class Broken(PythonModel):
        def predict(self, context, model_input, params=None):
            raise RuntimeError("boom")

    with pytest.raises(ModelFormatError, match="input example: RuntimeError: boom"):
        save_model(str(tmp_path / "m"), python_model=Broken(), input_example=["x"])
    assert not any(p.name.startswith("m") for p in tmp_path.iterdir())


def test_custom_loader_module(tmp_path):
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "factor.txt").write_text("3")
    (tmp_path / "my_loader_mod.py").write_text(
        "import os\nclass Impl:\n    def __init__(self, k): self.k = k\n    def predict(self, data, params=None): return [x * self.k for x in data]\n"
        "def _load_pyfunc(data_path, model_config=None):\n    return Impl(int(open(os.path.join(data_path, 'factor.txt')).read()))\n"
    )
    save_model(str(tmp_path / "m"), loader_module="my_loader_mod", data_path=str(tmp_path / "data"), code_paths=[str(tmp_path / "my_loader_mod.py")])
    out = run_python(f"""
        from servelm.flavors.pyfunc import load_model
        print(load_model({str(tmp_path / 'm')!r}).predict([1, 2]))
    """)
    assert out.strip() == "[3, 6]"


def test_model_yaml_round_trip(tmp_path, chat_model_code):
    save_model(str(tmp_path / "m"), python_model=chat_model_code)
    model = Model.load(str(tmp_path / "m"))
    assert model.task == "agent/v1/chat"
    assert model.load_input_example(str(tmp_path / "m"))["messages"][0]["content"] == "Hello!"
    model.save(str(tmp_path / "m"))
    assert Model.load(str(tmp_path / "m")).to_dict() == model.to_dict()


def test_chat_model_and_responses_agent_predict(tmp_path, chat_model_code, responses_agent_code):
    save_model(str(tmp_path / "c"), python_model=chat_model_code)
    out = load_model(str(tmp_path / "c")).predict({"messages": [{"role": "user", "content": "hi"}]})
    assert out["object"] == "chat.completion" and out["choices"][0]["message"]["content"] == "hi"
    save_model(str(tmp_path / "r"), python_model=responses_agent_code)
    loaded = load_model(str(tmp_path / "r"))
    assert loaded.predict({"input": [{"role": "user", "content": "yo"}]})["output"][0]["content"][0]["text"] == "yo"
    events = list(loaded.predict_stream({"input": [{"role": "user", "content": "a b"}]}))
    assert [e["type"] for e in events] == ["response.output_text.delta"] * 2 + ["response.output_item.done"]
    assert loaded.unwrap_python_model().__class__.__name__ == "EchoResponsesAgent"


def test_mlflow_loads_a_servelm_directory(tmp_path, chat_agent_code):
    """MLflow's generic loader_module protocol: mlflow.pyfunc.load_model on a servelm directory."""
    mlflow_pyfunc = pytest.importorskip("mlflow.pyfunc", reason="mlflow not installed (the 'bench' extra)")
    save_model(str(tmp_path / "m"), python_model=chat_agent_code)
    model = mlflow_pyfunc.load_model(str(tmp_path / "m"))
    assert model.predict({"messages": [{"role": "user", "content": "hi"}]})["messages"][0]["content"] == "hi"
