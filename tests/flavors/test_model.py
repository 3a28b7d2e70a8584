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
