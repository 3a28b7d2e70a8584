"""Environment files of a model directory: requirements inferred from imports, secrets read by name only."""

import os

import yaml

from servelm.flavors.pyfunc import save_model


def test_env_files_and_secret_names(tmp_path):
    (tmp_path / "model.py").write_text(
        "import os\nimport yaml\nfrom servelm.agents import PythonModel\nfrom servelm.flavors import set_model\n"
        "class M(PythonModel):\n"
        "    def predict(self, context, model_input, params=None):\n"
        "        return os.environ.get('MY_SERVICE_API_KEY', 'none') and os.getenv('HOME') and 1\n"
        "set_model(M())\n"
    )
    save_model(
        str(tmp_path / "m"),
        python_model=str(tmp_path / "model.py"),
        input_example=["x"],
        extra_pip_requirements=["extra-pkg==1"],
    )
    reqs = (tmp_path / "m" / "requirements.txt").read_text().splitlines()
    assert (
        reqs[0].startswith("servelm==")
        and any(r.lower().startswith("pyyaml==") for r in reqs)
        and reqs[-1] == "extra-pkg==1"
    )
    assert (tmp_path / "m" / "environment_variables.txt").read_text().splitlines()[1:] == ["MY_SERVICE_API_KEY"]
    assert yaml.safe_load((tmp_path / "m" / "python_env.yaml").read_text())["dependencies"] == ["-r requirements.txt"]
    assert "conda.yaml" in os.listdir(tmp_path / "m")


def test_load_warns_when_the_environment_does_not_match(tmp_path, caplog):
    """As MLflow's load_model: requirements this environment does not meet, and another Python, are named."""
    from servelm.agents import PythonModel
    from servelm.flavors import Model
    from servelm.flavors.pyfunc import load_model

    class Echo(PythonModel):
        def predict(self, context, model_input, params=None):
            return model_input

    path = str(tmp_path / "m")
    save_model(path, python_model=Echo(), pip_requirements=["pyyaml>=1", "numpy==0.0.1", "surely-not-installed-pkg"])
    load_model(path)
    assert "numpy (current: " in caplog.text and "required: numpy==0.0.1" in caplog.text
    assert "surely-not-installed-pkg (current: uninstalled" in caplog.text and "pyyaml" not in caplog.text
    caplog.clear()
    load_model(path, suppress_warnings=True)
    assert caplog.text == ""
    meta = Model.load(path)
    meta.flavors["python_function"]["python_version"] = "2.7.18"
    meta.save(path)
    load_model(path)
    assert "saved with Python 2.7.18" in caplog.text
