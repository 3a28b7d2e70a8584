"""MLflow's /invocations request formats: agent bodies passed raw, ``inputs`` / ``instances`` /
``dataframe_split`` / ``dataframe_records`` (+ ``params``) parsed, and a 400 naming what is accepted."""

import importlib.util

import pytest

from servelm.serving.errors import APIError
from servelm.serving.scoring_input import parse_invocation

HAS_PANDAS = importlib.util.find_spec("pandas") is not None


def refused(body):
    with pytest.raises(APIError) as info:
        parse_invocation(body)
    assert info.value.status == 400
    return info.value


@pytest.mark.parametrize("key", ["messages", "prompt", "input"])
def test_agent_bodies_pass_raw(key):
    body = {key: "x", "stream": True, "params": "whatever", "inputs": [1]}
    parsed = parse_invocation(body)
    assert parsed.raw and parsed.data is body and parsed.params is None and parsed.stream


@pytest.mark.parametrize("key", ["inputs", "instances"])
def test_inputs_and_instances_as_they_are(key):
    parsed = parse_invocation({key: ["a", "b"], "params": {"suffix": "!"}})
    assert (parsed.data, parsed.params, parsed.stream, parsed.raw) == (["a", "b"], {"suffix": "!"}, False, False)
    assert parse_invocation({key: {"x": 1}, "stream": 1}).stream is True


@pytest.mark.skipif(HAS_PANDAS, reason="with pandas installed the frames are DataFrames")
def test_dataframes_as_records_without_pandas():
    split = parse_invocation({"dataframe_split": {"columns": ["a", "b"], "data": [[1, 2], [3, 4]]}})
    assert split.data == [{"a": 1, "b": 2}, {"a": 3, "b": 4}] and not split.raw
    assert parse_invocation({"dataframe_split": {"data": [[1, 2]]}}).data == [[1, 2]]  # no columns: rows as they are
    assert parse_invocation({"dataframe_records": [{"a": 1}]}).data == [{"a": 1}]


def test_dataframes_with_pandas():
    pd = pytest.importorskip("pandas")
    split = parse_invocation({"dataframe_split": {"columns": ["a", "b"], "data": [[1, 2], [3, 4]]}}).data
    assert isinstance(split, pd.DataFrame) and split.to_dict(orient="records") == [{"a": 1, "b": 2}, {"a": 3, "b": 4}]
    records = parse_invocation({"dataframe_records": [{"a": 1}]}).data
    assert isinstance(records, pd.DataFrame) and list(records.columns) == ["a"]


def test_a_body_that_fits_no_format_names_them():
    assert "needs a JSON object" in refused(["a"]).message
    none = refused({"data": [1]})
    assert "none of" in none.message and "dataframe_split" in none.message and none.code == "invalid_format"
    several = refused({"inputs": ["a"], "instances": ["b"]})
    assert "several of" in several.message and "exactly one" in several.message


def test_bad_parts_are_named():
    assert refused({"inputs": [1], "params": ["x"]}).param == "params"
    assert refused({"dataframe_split": [[1, 2]]}).param == "dataframe_split"
    assert refused({"dataframe_split": {"columns": ["a"]}}).param == "dataframe_split"
    assert refused({"dataframe_records": {"a": 1}}).param == "dataframe_records"
