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
