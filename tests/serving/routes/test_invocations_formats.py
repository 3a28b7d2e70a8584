"""/invocations takes every body MLflow's scoring server takes: CSV, bare split frames and record lists,
``format=pandas-records``, TF-serving columns and ``b64`` values, base64 binary columns; JSON cast to a
tensor schema's dtype; numpy / pandas / datetime values anywhere in the output."""

import base64
import datetime

import httpx
import pytest

from servelm.agents import PythonModel
from servelm.flavors import ColSpec, ModelSignature, Schema, TensorSpec
from servelm.flavors.pyfunc import save_model

pd = pytest.importorskip("pandas")
np = pytest.importorskip("numpy")


class Rows(PythonModel):
    """Returns its DataFrame's rows, with numpy and datetime values inside."""

    def predict(self, context, model_input, params=None):
        return {
            "rows": model_input.to_dict(orient="records"),
            "n": np.int64(len(model_input)),
            "mean": np.float32(0.5),
            "when": datetime.datetime(2026, 1, 2, 3, 4, 5),
            "array": np.arange(2),
        }


class Dtype(PythonModel):
    def predict(self, context, model_input, params=None):
        return {"dtype": str(model_input.dtype), "sum": model_input.sum(axis=1)}


class Lengths(PythonModel):
    def predict(self, context, model_input, params=None):
        return [len(b) for b in model_input["blob"]]


def test_csv_split_records_and_numpy_output(tmp_path, serve):
    save_model(
        str(tmp_path / "m"),
        python_model=Rows(),
        signature=ModelSignature(Schema([ColSpec("double", "x"), ColSpec("string", "s")])),
    )
    rows = [{"x": 1.0, "s": "a"}, {"x": 2.5, "s": "b"}]
    with serve(str(tmp_path / "m")) as (base, _):
        bodies = [
            (b"x,s\n1.0,a\n2.5,b\n", "text/csv"),
            (b'{"columns": ["x", "s"], "data": [[1.0, "a"], [2.5, "b"]]}', "application/json"),
            (b'[{"x": 1.0, "s": "a"}, {"x": 2.5, "s": "b"}]', "application/json"),
            (b'[{"x": 1.0, "s": "a"}, {"x": 2.5, "s": "b"}]', "application/json; format=pandas-records"),
            (b'{"columns": ["x", "s"], "data": [[1.0, "a"], [2.5, "b"]]}', "application/json; format=pandas-split"),
            (b'{"inputs": {"x": [1.0, 2.5], "s": ["a", "b"]}}', "application/json"),
        ]
        for body, content_type in bodies:
            reply = httpx.post(f"{base}/invocations", content=body, headers={"content-type": content_type})
            assert reply.status_code == 200, (content_type, reply.text)
            assert reply.json() == {
                "predictions": {"rows": rows, "n": 2, "mean": 0.5, "when": "2026-01-02T03:04:05", "array": [0, 1]}
            }, body
        assert (
            httpx.post(f"{base}/invocations", content=b"x", headers={"content-type": "text/plain"}).status_code == 415
        )
        assert (
            httpx.post(
                f"{base}/invocations", content=b"[]", headers={"content-type": "application/json; format=nope"}
            ).status_code
            == 415
        )


def test_json_is_cast_to_the_tensor_dtype(tmp_path, serve):
    save_model(
        str(tmp_path / "m"),
        python_model=Dtype(),
        signature=ModelSignature(Schema([TensorSpec(np.dtype("float32"), (-1, 2))])),
    )
    with serve(str(tmp_path / "m")) as (base, _):
        for body in ({"instances": [[1, 2], [3, 4]]}, {"inputs": [[1.5, 2], [3, 4]]}):
            assert httpx.post(f"{base}/invocations", json=body).json()["predictions"]["dtype"] == "float32"


def test_base64_binary(tmp_path, serve):
    save_model(
        str(tmp_path / "m"), python_model=Lengths(), signature=ModelSignature(Schema([ColSpec("binary", "blob")]))
    )
    encoded = base64.b64encode(b"\x00\x01\x02").decode()
    with serve(str(tmp_path / "m")) as (base, _):
        assert httpx.post(f"{base}/invocations", json={"dataframe_records": [{"blob": encoded}]}).json() == {
            "predictions": [3]
        }
        assert httpx.post(f"{base}/invocations", json={"inputs": {"blob": [{"b64": encoded}]}}).json() == {
            "predictions": [3]
        }
        # CSV is read as MLflow reads it: a binary column's text is not base64-decoded
        assert httpx.post(
            f"{base}/invocations", content=f"blob\n{encoded}\n".encode(), headers={"content-type": "text/csv"}
        ).json() == {"predictions": [len(encoded)]}
