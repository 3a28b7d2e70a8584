"""The loader module named in MLmodel files (MLflow's ``_load_pyfunc`` protocol): artifacts, code paths and
model_config at load, and mlflow.pyfunc loading a servelm directory."""

import os

import pytest

from servelm.agents import PythonModel
from servelm.flavors import ModelFormatError
from servelm.flavors.pyfunc import load_model, save_model


class Upper(PythonModel):
    def predict(self, model_input: list[str], params=None) -> list[str]:
        return [s.upper() for s in model_input]


def test_artifacts_code_paths_and_model_config(tmp_path, run_python):
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
        save_model(
            str(tmp_path / "m"),
            python_model=str(tmp_path / "model.py"),
            artifacts={"vocab": str(tmp_path / "vocab.txt")},
            code_paths=[str(tmp_path / "lib" / "helper_mod_xyz.py")],
            model_config={"suffix": "?"},
        )
    finally:
        sys.path.remove(str(tmp_path / "lib"))
    out = run_python(
        f"""
        import warnings
        from servelm.flavors.pyfunc import load_model
        print(load_model({str(tmp_path / "m")!r}).predict(None))
        with warnings.catch_warnings(record=True) as w:
            warnings.simplefilter("always")
            m = load_model({str(tmp_path / "m")!r}, model_config={{"suffix": "#", "typo": 1}})
        print(m.predict(None), m.model_config, "typo" in str(w[0].message))
    """,
        cwd=str(tmp_path),
    )
    assert out.splitlines() == ["HELLO!?", "HELLO!# {'suffix': '#'} True"]


def test_missing_artifact_is_named(tmp_path):
    (tmp_path / "a.txt").write_text("x")
    save_model(str(tmp_path / "m"), python_model=Upper(), artifacts={"a": str(tmp_path / "a.txt")})
    os.remove(tmp_path / "m" / "artifacts" / "a.txt")
    with pytest.raises(ModelFormatError, match="artifact 'a' is missing"):
        load_model(str(tmp_path / "m"))


def test_mlflow_loads_a_servelm_directory(tmp_path, chat_agent_code):
    """MLflow's generic loader_module protocol: mlflow.pyfunc.load_model on a servelm directory."""
    mlflow_pyfunc = pytest.importorskip("mlflow.pyfunc", reason="mlflow not installed (the 'bench' extra)")
    save_model(str(tmp_path / "m"), python_model=chat_agent_code)
    model = mlflow_pyfunc.load_model(str(tmp_path / "m"))
    assert model.predict({"messages": [{"role": "user", "content": "hi"}]})["messages"][0]["content"] == "hi"
