"""Signatures: MLflow's JSON format, inference from hints and examples, enforcement without copies."""

import json

import pytest

from servelm.flavors import ModelSignature, Schema, SchemaEnforcementError
from servelm.flavors.signature import (
    Array,
    ColSpec,
    Map,
    ParamSchema,
    ParamSpec,
    Scalar,
    TensorSpec,
    enforce_params,
    enforce_schema,
    schema_from_example,
    schema_from_type_hint,
)


def test_type_hints_match_mlflow_json():
    assert schema_from_type_hint(list[str]).to_json() == '[{"type": "string", "required": true}]'
    assert json.loads(schema_from_type_hint(list[dict[str, str]]).to_json()) == [
        {"type": "map", "values": {"type": "string"}, "required": True}
    ]


def test_reference_signatures_round_trip(mlflow_reference):
    import yaml

    for name in ("chat_agent_code", "responses_agent_code", "chat_model_code", "upper_code"):
        sig = yaml.safe_load((mlflow_reference / name / "MLmodel").read_text())["signature"]
        parsed = ModelSignature.from_dict(sig)
        assert json.loads(parsed.inputs.to_json()) == json.loads(sig["inputs"]), name


def test_example_inference():
    schema = schema_from_example({"question": "hi", "k": 3, "tags": ["a"]})
    assert schema.column_names() == ["question", "k", "tags"]
    assert schema.specs[2].dtype == Array(Scalar("string"))


def test_enforcement_returns_same_object_when_valid():
    schema = Schema((ColSpec(Scalar("string"), "q"), ColSpec(Array(Scalar("double")), "xs")))
    record = {"q": "x", "xs": [1.0, 2.0]}
    assert enforce_schema(record, schema) is record
    records = [record, {"q": "y", "xs": []}]
    assert enforce_schema(records, schema) is records


def test_enforcement_widens_int_to_double_only():
    schema = Schema((ColSpec(Array(Scalar("double")), "xs"),))
    record = {"xs": [1, 2.5]}
    out = enforce_schema(record, schema)
    assert out == {"xs": [1.0, 2.5]} and out is not record and record["xs"][0] == 1
    with pytest.raises(SchemaEnforcementError, match=r"'xs\[1\]': expected double, got str"):
        enforce_schema({"xs": [1.0, "2"]}, schema)


def test_enforcement_names_missing_field():
    schema = Schema((ColSpec(Scalar("string"), "q"), ColSpec(Map(Scalar("long")), "m", required=False)))
    with pytest.raises(SchemaEnforcementError, match="'q' is required"):
        enforce_schema({"m": {}}, schema)
    with pytest.raises(SchemaEnforcementError, match="'m.a': expected long"):
        enforce_schema({"q": "x", "m": {"a": 1.5}}, schema)


def test_tensor_spec():
    import numpy as np

    schema = Schema((TensorSpec("float64", (-1, 2)),))
    out = enforce_schema(np.ones((3, 2), dtype=np.float32), schema)
    assert out.dtype == np.float64
    with pytest.raises(SchemaEnforcementError, match="shape"):
        enforce_schema(np.ones((3, 3)), schema)
    assert Schema.from_json(schema.to_json()) == schema


def test_params_defaults_and_types(caplog):
    schema = ParamSchema((ParamSpec("temperature", "double", 0.5), ParamSpec("stop", "string", ["x"], (-1,))))
    assert enforce_params(None, schema) == {"temperature": 0.5, "stop": ["x"]}
    assert enforce_params({"temperature": 1}, schema)["temperature"] == 1.0
    with pytest.raises(SchemaEnforcementError, match="temperature"):
        enforce_params({"temperature": "hot"}, schema)
    # as MLflow: a param the schema does not name is ignored with a warning; no schema, no params
    assert enforce_params({"nope": 1}, schema) == {"temperature": 0.5, "stop": ["x"]}
    assert "['nope'] are not in the model's params schema" in caplog.text
    assert enforce_params({"k": 1}, None) == {} and enforce_params(None, None) is None
    assert ParamSchema.from_json(schema.to_json()) == schema
