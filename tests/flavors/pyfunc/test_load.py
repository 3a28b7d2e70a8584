"""python_function load_model: round trips in fresh subprocesses, one clear error per broken directory,
and custom loader modules."""

import json

import pytest
import yaml

from servelm.flavors import ModelFormatError
from servelm.flavors.pyfunc import load_model, save_model


def test_chat_agent_from_code_round_trip_in_subprocess(tmp_path, chat_agent_code, run_python):
    save_model(str(tmp_path / "m"), python_model=chat_agent_code)
    out = run_python(f"""
        import json
        from servelm.flavors.pyfunc import load_model
        m = load_model({str(tmp_path / "m")!r})
        print(json.dumps(m.predict({{"messages": [{{"role": "user", "content": "hello world"}}]}})))
        print(json.dumps(list(m.predict_stream({{"messages": [{{"role": "user", "content": "hello world"}}]}}))))
        print(m.metadata.task)
    """)
    reply, chunks, task = out.strip().splitlines()
    assert json.loads(reply)["messages"][0]["content"] == "hello world"
    assert [c["delta"]["content"] for c in json.loads(chunks)] == ["hello ", "world "]
    assert task == "agent/v2/chat"


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


def test_custom_loader_module(tmp_path, run_python):
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "factor.txt").write_text("3")
    (tmp_path / "my_loader_mod.py").write_text(
        "import os\nclass Impl:\n    def __init__(self, k): self.k = k\n"
        "    def predict(self, data, params=None): return [x * self.k for x in data]\n"
        "def _load_pyfunc(data_path, model_config=None):\n"
        "    return Impl(int(open(os.path.join(data_path, 'factor.txt')).read()))\n"
    )
    save_model(
        str(tmp_path / "m"),
        loader_module="my_loader_mod",
        data_path=str(tmp_path / "data"),
        code_paths=[str(tmp_path / "my_loader_mod.py")],
    )
    out = run_python(f"""
        from servelm.flavors.pyfunc import load_model
        print(load_model({str(tmp_path / "m")!r}).predict([1, 2]))
    """)
    assert out.strip() == "[3, 6]"
