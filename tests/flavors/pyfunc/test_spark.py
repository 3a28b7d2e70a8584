"""``spark_udf`` against a real Spark (``local[2]``, one session for the run): pyfunc models and an LLM score
DataFrames, each Python worker loads the model once (counted), each Arrow batch is one predict call, and what
is missing on the executors is named. Runs where pyspark is installed (scripts/test-scale.sh makes that venv)."""

import importlib.util
import os
import subprocess
import sys
import textwrap
from collections import Counter

import pytest

if importlib.util.find_spec("pyspark") is None or importlib.util.find_spec("pyarrow") is None:
    pytest.skip(
        "pyspark and pyarrow are not installed in this environment "
        "(CI runs these tests in the venv of scripts/test-scale.sh)",
        allow_module_level=True,
    )

from servelm.flavors.pyfunc import save_model, spark_udf  # noqa: E402
from servelm.flavors.pyfunc import spark as spark_module  # noqa: E402

BATCH = 4  # rows per Arrow batch: several batches per task, several tasks per worker


@pytest.fixture(scope="session")
def spark(tmp_path_factory):
    """A local[2] SparkSession whose Python workers log their loads and predict calls (SERVELM_SPARK_LOG)."""
    import shutil

    from pyspark.sql import SparkSession

    if shutil.which("java") is None and not os.environ.get("JAVA_HOME"):
        pytest.skip("Spark needs a Java runtime (17 or later), and there is none here")
    log_dir = tmp_path_factory.mktemp("spark-log")
    os.environ.update(
        {
            "PYSPARK_PYTHON": sys.executable,
            "PYSPARK_DRIVER_PYTHON": sys.executable,
            "SPARK_LOCAL_IP": "127.0.0.1",
            "SERVELM_SPARK_LOG": str(log_dir / "events.tsv"),
            "MODEL_LOADS": str(log_dir / "model-loads.txt"),
        }
    )
    session = (
        SparkSession.builder.master("local[2]")
        .appName("servelm-tests")
        .config("spark.driver.bindAddress", "127.0.0.1")
        .config("spark.driver.host", "127.0.0.1")
        .config("spark.ui.enabled", "false")
        .config("spark.sql.shuffle.partitions", "4")
        .config("spark.sql.execution.arrow.maxRecordsPerBatch", str(BATCH))
        .getOrCreate()
    )
    session.sparkContext.setLogLevel("ERROR")
    try:
        yield session
    finally:
        session.stop()


def events(kind, model=None):
    """(pid, value) of each SERVELM_SPARK_LOG line of ``kind`` (load: the model path; predict: rows)."""
    path = os.environ["SERVELM_SPARK_LOG"]
    if not os.path.exists(path):
        return []
    rows = [line.rstrip("\n").split("\t") for line in open(path)]
    return [(pid, value) for event, pid, value, _ in rows if event == kind and (model is None or value == model)]


def clear_events():
    for name in ("SERVELM_SPARK_LOG", "MODEL_LOADS"):
        if os.path.exists(os.environ[name]):
            os.remove(os.environ[name])


UPPER = """
import os
from servelm.agents import PythonModel
from servelm.flavors import set_model


class Upper(PythonModel):
    def load_context(self, context):
        self.suffix = context.model_config.get("suffix", "")
        with open(os.environ["MODEL_LOADS"], "a") as f:  # the model counts its own loads
            f.write(f"{os.getpid()}\\n")

    def predict(self, context, model_input: list[str], params=None) -> list[str]:
        return [s.upper() + self.suffix + (params or {}).get("end", "") for s in model_input]


set_model(Upper())
"""


@pytest.fixture(scope="session")
def upper_dir(tmp_path_factory, write_code):
    root = tmp_path_factory.mktemp("spark-upper")
    os.environ.setdefault("MODEL_LOADS", os.devnull)
    save_model(
        str(root / "upper"),
        python_model=write_code(root, "upper.py", UPPER),
        model_config={"suffix": ""},
        input_example=(["a"], {"end": ""}),  # declares the params it takes (a model declaring none gets none)
    )
    return str(root / "upper")


def test_a_pyfunc_model_scores_a_column_and_loads_once_per_worker(spark, upper_dir):
    clear_events()
    frame = spark.createDataFrame([(f"row {i}",) for i in range(48)], "text string").repartition(6)
    udf = spark_udf(spark, upper_dir, result_type="string", params={"end": "!"}, model_config={"suffix": "?"})
    rows = frame.withColumn("out", udf("text")).collect()
    assert sorted(r.out for r in rows) == sorted(f"ROW {i}?!" for i in range(48))
    loads = [line.strip() for line in open(os.environ["MODEL_LOADS"])]
    predicts = events("predict")
    assert len(predicts) >= 48 // BATCH and all(int(n) <= BATCH for _, n in predicts)  # one predict per Arrow batch
    assert sum(int(n) for _, n in predicts) == 48
    assert 1 <= len(loads) <= 2 and len(set(loads)) == len(loads), (
        loads
    )  # once per Python worker (local[2]: at most two)
    assert Counter(pid for pid, _ in events("load")) == Counter(loads)
    assert {pid for pid, _ in predicts} <= set(loads)


SUMS = """
import pandas as pd
from servelm.agents import PythonModel
from servelm.flavors import set_model


class Sums(PythonModel):
    def predict(self, context, model_input, params=None):
        if isinstance(model_input, dict):  # the input example, when saved
            model_input = pd.DataFrame([model_input])
        # what spark_udf gives a model with named columns
        assert isinstance(model_input, pd.DataFrame), type(model_input)
        return pd.DataFrame({"total": model_input["a"] + model_input["b"],
                             "product": model_input["a"] * model_input["b"],
                             "label": [f"{a}x{b}" for a, b in zip(model_input["a"], model_input["b"])]})


set_model(Sums())
"""


def test_named_columns_structs_and_arrays(spark, tmp_path, write_code):
    from pyspark.sql.functions import struct

    path = str(tmp_path / "sums")
    save_model(path, python_model=write_code(tmp_path, "sums.py", SUMS), input_example={"a": 1.0, "b": 2.0})
    frame = spark.createDataFrame([(float(i), 2.0) for i in range(10)], "a double, b double")
    udf = spark_udf(spark, path, result_type="struct<total: double, label: string>")
    by_columns = frame.select(udf("a", "b").alias("out")).collect()
    by_struct = frame.select(udf(struct("a", "b")).alias("out")).collect()
    by_signature = frame.select(udf().alias("out")).collect()  # no columns: the input signature's names
    expected = sorted((i + 2.0, f"{float(i)}x2.0") for i in range(10))
    for rows in (by_columns, by_struct, by_signature):
        assert sorted((r.out.total, r.out.label) for r in rows) == expected
    arrays = frame.select(spark_udf(spark, path, result_type="array<double>")("a", "b").alias("out")).collect()
    assert sorted(r.out for r in arrays) == sorted(
        [i + 2.0, i * 2.0] for i in range(10)
    )  # each row's numeric columns (as MLflow)
    first = frame.select(spark_udf(spark, path, result_type="double")("a", "b").alias("out")).collect()
    assert sorted(r.out for r in first) == [i + 2.0 for i in range(10)]  # a primitive result: the first column


def test_default_result_types_and_refusals(spark, upper_dir, tiny_llama_dir):
    assert spark_udf(spark, upper_dir).returnType.simpleString() == "string"  # the output signature's column
    assert spark_udf(spark, tiny_llama_dir).returnType.simpleString() == "string"  # an LLM's reply
    with pytest.raises(ValueError, match="env_manager"):
        spark_udf(spark, upper_dir, env_manager="conda")
    with pytest.raises(ValueError, match="primitive"):
        spark_udf(spark, upper_dir, result_type="map<string, int>")
    with pytest.raises(ValueError, match="not what an LLM returns"):
        spark_udf(spark, tiny_llama_dir, result_type="struct<logits: double>")
    with pytest.raises(ValueError, match="not a Spark type"):
        spark_udf(spark, upper_dir, result_type="strin g!")


def test_an_llm_scores_prompts_and_message_lists_one_batch_per_arrow_batch(spark, tiny_llama_dir):
    clear_events()
    prompts = spark.createDataFrame([(f"hello {i}",) for i in range(10)] + [(None,)], "prompt string").repartition(2)
    udf = spark_udf(spark, tiny_llama_dir, params={"max_tokens": 3, "temperature": 0.0, "ignore_eos": True})
    rows = prompts.withColumn("reply", udf("prompt")).collect()
    assert all(isinstance(r.reply, str) and r.reply for r in rows if r.prompt is not None)
    assert [r.reply for r in rows if r.prompt is None] == [None]  # a null prompt scores to null
    predicts = events("predict")
    assert (
        sum(int(n) for _, n in predicts) == 11 and max(int(n) for _, n in predicts) > 1
    )  # several rows per predict call
    loads = events("load", tiny_llama_dir)
    assert len(loads) == len({pid for pid, _ in loads}) and 1 <= len(loads) <= 2  # once per worker, not per batch

    messages = spark.createDataFrame(
        [([{"role": "user", "content": f"hi {i}"}],) for i in range(6)],
        "messages array<struct<role: string, content: string>>",
    )
    detailed = spark_udf(
        spark,
        tiny_llama_dir,
        result_type="struct<content: string, finish_reason: string, completion_tokens: int>",
        params={"max_tokens": 4, "ignore_eos": True},
    )
    out = [r.out for r in messages.select(detailed("messages").alias("out")).collect()]
    assert all(o.completion_tokens == 4 and o.finish_reason == "length" and o.content for o in out)
    choices = spark_udf(
        spark, tiny_llama_dir, result_type="array<string>", params={"max_tokens": 2, "n": 2, "ignore_eos": True}
    )
    assert all(len(r.out) == 2 for r in messages.select(choices("messages").alias("out")).collect())
    pids = [pid for pid, _ in events("load", tiny_llama_dir)]
    assert len(pids) == len(set(pids)) <= 2  # other params, same loaded model: still once per worker


def test_the_model_dir_can_be_shipped_to_executors(spark, upper_dir, monkeypatch):
    """Off local mode the directory goes to the executors with addFile (forced here) and loads from SparkFiles."""
    shipped = []

    def ship(session, path):
        session.sparkContext.addFile(path, recursive=True)
        shipped.append(os.path.basename(path))
        return shipped[-1]

    monkeypatch.setattr(spark_module, "_ship", ship)
    clear_events()
    frame = spark.createDataFrame([("a",), ("b",)], "text string")
    assert sorted(r.out for r in frame.select(spark_udf(spark, upper_dir)("text").alias("out")).collect()) == ["A", "B"]
    assert shipped == ["upper"] and all(not path.startswith(os.path.dirname(upper_dir)) for _, path in events("load"))


def run_isolated(code):
    proc = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, timeout=600)
    return proc.stdout + proc.stderr


def test_an_executor_without_servelm_says_so(tmp_path, upper_dir):
    """The UDF's function unpickles without servelm (it names nothing of servelm's) and then says what to install."""
    from pyspark import cloudpickle

    spec = {"extra": "pip install -r requirements.txt", "path": upper_dir}
    blob = tmp_path / "udf.pkl"
    blob.write_bytes(cloudpickle.dumps(spark_module._udf_function({**spec, "result_type": _string_type()})))
    out = run_isolated(f"""
        import pickle, sys
        sys.modules["servelm"] = None  # as on an executor where servelm is not installed
        udf = pickle.load(open({str(blob)!r}, "rb"))
        try:
            next(iter(udf(iter([]))))
        except RuntimeError as exc:
            print("ERROR", exc)
    """)
    assert (
        "ERROR servelm is not installed in this Spark executor's Python" in out
        and "pip install -r requirements.txt" in out
    ), out


def test_an_executor_without_the_flavors_extra_says_so(tiny_llama_dir):
    out = run_isolated(f"""
        import sys
        sys.modules["torch"] = None  # as on an executor without servelm[transformers]
        from servelm.flavors.pyfunc.spark_worker import loaded_model
        try:
            loaded_model(
                {{"path": {tiny_llama_dir!r}, "model_config": {{}}, "extra": "pip install 'servelm[transformers]'"}}
            )
        except RuntimeError as exc:
            print("ERROR", exc)
    """)
    assert "lacks the module 'torch'" in out and "pip install 'servelm[transformers]'" in out, out


def _string_type():
    from pyspark.sql.types import StringType

    return StringType()
