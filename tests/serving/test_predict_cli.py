"""``servelm predict``: score a json / jsonl / csv file with a model directory (MLflow's ``models predict``)."""

import importlib.util
import json

from typer.testing import CliRunner

from servelm.agents import PythonModel
from servelm.flavors.pyfunc import save_model
from servelm.serving.cli import app


class Upper(PythonModel):
    def predict(self, model_input: list[str], params=None) -> list[str]:
        return [s.upper() + (params or {}).get("suffix", "") for s in model_input]


def test_predict_json_jsonl_csv_and_agents(tmp_path, chat_agent_code):
    save_model(str(tmp_path / "m"), python_model=Upper(), input_example=(["a"], {"suffix": ""}))
    (tmp_path / "in.json").write_text(json.dumps({"inputs": ["a", "b"], "params": {"suffix": "!"}}))
    runner = CliRunner()
    result = runner.invoke(
        app, ["predict", "-m", str(tmp_path / "m"), "-i", str(tmp_path / "in.json"), "-o", str(tmp_path / "out.json")]
    )
    assert result.exit_code == 0, result.output
    assert json.loads((tmp_path / "out.json").read_text()) == {"predictions": ["A!", "B!"]}
    (tmp_path / "in.jsonl").write_text('{"inputs": ["x"]}\n{"instances": ["y"]}\n')
    result = runner.invoke(app, ["predict", "-m", str(tmp_path / "m"), "-i", str(tmp_path / "in.jsonl")])
    assert [json.loads(line) for line in result.output.splitlines()] == [{"predictions": ["X"]}, {"predictions": ["Y"]}]
    if importlib.util.find_spec("pandas") is not None:  # CSV is read into a DataFrame
        (tmp_path / "in.csv").write_text("text\nc\nd\n")
        result = runner.invoke(
            app, ["predict", "-m", str(tmp_path / "m"), "-i", str(tmp_path / "in.csv"), "--content-type", "csv"]
        )
        assert json.loads(result.output) == {"predictions": ["C", "D"]}
    save_model(str(tmp_path / "agent"), python_model=chat_agent_code)
    result = runner.invoke(
        app,
        ["predict", "-m", str(tmp_path / "agent")],
        input=json.dumps({"messages": [{"role": "user", "content": "hey"}]}),
    )
    assert json.loads(result.output)["messages"][0]["content"] == "hey"
    bad = runner.invoke(app, ["predict", "-m", str(tmp_path / "m"), "-i", str(tmp_path / "in.json"), "-t", "xml"])
    assert bad.exit_code == 2 and "json or csv" in bad.output
