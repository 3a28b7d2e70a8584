"""``Model``: the MLmodel file read, written and read back unchanged."""

from servelm.flavors import Model
from servelm.flavors.pyfunc import save_model


def test_model_yaml_round_trip(tmp_path, chat_model_code):
    save_model(str(tmp_path / "m"), python_model=chat_model_code)
    model = Model.load(str(tmp_path / "m"))
    assert model.task == "agent/v1/chat"
    assert model.load_input_example(str(tmp_path / "m"))["messages"][0]["content"] == "Hello!"
    model.save(str(tmp_path / "m"))
    assert Model.load(str(tmp_path / "m")).to_dict() == model.to_dict()


def test_save_takes_the_mlmodel_file_path_as_mlflow_does(tmp_path):
    model = Model(metadata={"k": "v"})
    model.save(str(tmp_path / "MLmodel"))  # MLflow's Model.save(os.path.join(path, "MLmodel"))
    model.save(str(tmp_path / "elsewhere.yaml"))
    assert Model.load(str(tmp_path)).metadata == {"k": "v"}
    assert Model.load(str(tmp_path / "MLmodel")).metadata == {"k": "v"}
    assert (tmp_path / "elsewhere.yaml").read_text() == (tmp_path / "MLmodel").read_text()
