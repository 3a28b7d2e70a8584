"""The parity corpus: MLflow code, saved and called as MLflow users do. A new parity bug is one more Case.

Models mostly answer ``describe(model_input)`` (see harness.DESCRIBE), so a case compares what each system
*handed the model* (types, dtypes, shapes, column order), not only what came back.
"""

from __future__ import annotations

from harness import Case, csv, http, predict, saved_signature

ECHO = """
class Echo(mlflow.pyfunc.PythonModel):
    def predict(self, context, model_input, params=None):
        return describe(model_input)

model = Echo()
"""

ECHO_PARAMS = """
class EchoParams(mlflow.pyfunc.PythonModel):
    def predict(self, context, model_input, params=None):
        return {"input": describe(model_input), "params": describe(params)}

model = EchoParams()
"""

VALUES = """
class Values(mlflow.pyfunc.PythonModel):
    def predict(self, context, model_input, params=None):
        return model_input.values.tolist()

model = Values()
"""

SIG_X1_X2 = """
from mlflow.models import ModelSignature
from mlflow.types.schema import ColSpec, Schema
SIGNATURE = ModelSignature(inputs=Schema([ColSpec("double", "x1"), ColSpec("double", "x2")]))
"""

TENSOR_F32 = """
from mlflow.models import ModelSignature
from mlflow.types.schema import Schema, TensorSpec
SIGNATURE = ModelSignature(inputs=Schema([TensorSpec(np.dtype("float32"), (-1, 2))]))
"""

CASES: list[Case] = [
    # ---------------------------------------------------------------- columns against the signature
    Case(
        "columns_reordered_and_filtered",
        VALUES,
        setup=SIG_X1_X2,
        save="signature=SIGNATURE",
        calls=[
            predict('pd.DataFrame({"x2": [2.0], "x1": [1.0], "junk": [9.0]})'),
            predict('{"x2": 2.0, "x1": 1.0}'),
            predict('[{"x2": 2.0, "x1": 1.0}]'),
            http({"dataframe_records": [{"x2": 2.0, "x1": 1.0, "junk": 9.0}]}),
            http({"dataframe_split": {"columns": ["x2", "x1"], "data": [[2.0, 1.0]]}}),
            csv(",x2,x1\n0,2.0,1.0\n"),
            csv("x2,x1\n2.0,1.0\n"),
            predict('pd.DataFrame({"x1": [1.0]})'),
        ],
    ),
    Case(
        "column_types",
        ECHO,
        setup="""
        from mlflow.models import ModelSignature
        from mlflow.types.schema import ColSpec, Schema
        SIGNATURE = ModelSignature(inputs=Schema([
            ColSpec("double", "d"), ColSpec("long", "l"), ColSpec("string", "s"), ColSpec("float", "f"),
        ]))
        """,
        save="signature=SIGNATURE",
        calls=[
            predict('pd.DataFrame({"d": [1.5], "l": [2], "s": ["x"], "f": [np.float32(0.5)]})'),
            predict('pd.DataFrame({"d": [1], "l": [2], "s": ["x"], "f": [np.float32(0.5)]})'),
            predict('pd.DataFrame({"d": np.array([1], dtype=np.int32), "l": [2], "s": ["x"], "f": [0.5]})'),
            predict('pd.DataFrame({"d": [1.5], "l": [2.0], "s": ["x"], "f": [np.float32(0.5)]})'),
            predict('pd.DataFrame({"d": [1.5], "l": [2], "s": [3], "f": [np.float32(0.5)]})'),
            predict('pd.DataFrame({"d": [1.5], "l": [2], "s": ["x"], "f": [0.5]})'),
            http({"dataframe_records": [{"d": 1, "l": 2, "s": "x", "f": 0.5}]}),
            http({"dataframe_records": [{"d": 1.5, "l": 2.5, "s": "x", "f": 0.5}]}),
            csv("d,l,s,f\n1,2,x,0.5\n"),
        ],
    ),
    Case(
        "datetime_column",
        ECHO,
        setup="""
        from mlflow.models import ModelSignature
        from mlflow.types.schema import ColSpec, Schema
        SIGNATURE = ModelSignature(inputs=Schema([ColSpec("datetime", "t")]))
        """,
        save="signature=SIGNATURE",
        calls=[
            predict('pd.DataFrame({"t": pd.to_datetime(["2024-01-02"])})'),
            predict('pd.DataFrame({"t": ["2024-01-02T03:04:05"]})'),
            http({"dataframe_records": [{"t": "2024-01-02T03:04:05"}]}),
        ],
    ),
    # ---------------------------------------------------------------- no signature: MLflow's body conversions
    Case(
        "no_signature_bodies",
        ECHO,
        calls=[
            http({"inputs": [[1, 2, 3], [4, 5, 6]]}),
            http({"inputs": [1.5, 2.5]}),
            http({"inputs": {"a": [1, 2], "b": [3, 4]}}),
            http({"inputs": {"a": 1, "b": "x"}}),
            http({"instances": [{"a": 1, "b": 2}, {"a": 3, "b": 4}]}),
            http({"instances": [[1, 2], [3, 4]]}),
            http({"instances": ["a", "b"]}),
            http({"dataframe_split": {"columns": ["a", "b"], "data": [[1, 2.5]]}}),
            http({"dataframe_records": [{"a": 1, "b": "x"}]}),
            http({"dataframe_split": {"index": [5], "columns": ["a"], "data": [[1]]}}),
            csv("a,b\n1,x\n"),
            http({"inputs": "a string"}),
            http({"inputs": [[1, 2], [3]]}),
        ],
    ),
    Case(
        "no_signature_predict",
        ECHO,
        calls=[
            predict("[[1, 2, 3], [4, 5, 6]]"),
            predict('{"a": [1, 2]}'),
            predict('"text"'),
            predict('pd.DataFrame({"a": [1]})'),
            predict("np.array([1.0, 2.0])"),
        ],
    ),
    # ---------------------------------------------------------------- tensors
    Case(
        "tensor_float32",
        ECHO,
        setup=TENSOR_F32,
        save="signature=SIGNATURE",
        calls=[
            predict('np.array([[1.0, 2.0]], dtype=np.float32)'),
            predict('np.array([[1.0, 2.0]], dtype=np.float64)'),
            predict("np.array([[1, 2]])"),
            predict("[[1.0, 2.0]]"),
            predict('pd.DataFrame({"a": [1.0], "b": [2.0]})'),
            predict("np.array([[1.0, 2.0, 3.0]], dtype=np.float32)"),
            http({"inputs": [[1, 2]]}),
            http({"inputs": [[1.5, 2.5]]}),
            http({"instances": [[1.5, 2.5]]}),
            http({"dataframe_split": {"columns": ["a", "b"], "data": [[1, 2]]}}),
            http({"dataframe_records": [{"a": 1.5, "b": 2.5}]}),
            http({"inputs": [[1.5, 2.5, 3.5]]}),
            csv("a,b\n1,2\n"),
        ],
    ),
    Case(
        "named_tensors",
        ECHO,
        setup="""
        from mlflow.models import ModelSignature
        from mlflow.types.schema import Schema, TensorSpec
        SIGNATURE = ModelSignature(inputs=Schema([
            TensorSpec(np.dtype("float64"), (-1,), "a"), TensorSpec(np.dtype("int64"), (-1,), "b"),
        ]))
        """,
        save="signature=SIGNATURE",
        calls=[
            predict('{"a": np.array([1.0]), "b": np.array([2])}'),
            http({"inputs": {"a": [1.0, 2.0], "b": [3, 4]}}),
            http({"instances": [{"a": 1.0, "b": 3}, {"a": 2.0, "b": 4}]}),
            http({"dataframe_records": [{"a": 1.0, "b": 3}]}),
            http({"inputs": {"a": [1.0]}}),
        ],
    ),
    # ---------------------------------------------------------------- params
    Case(
        "params_with_schema",
        ECHO_PARAMS,
        setup="""
        from mlflow.models import infer_signature
        SIGNATURE = infer_signature(["a"], ["b"], params={"k": 1, "name": "x"})
        """,
        save="signature=SIGNATURE",
        calls=[
            predict('["q"]'),
            predict('["q"]', params='{"k": 5}'),
            predict('["q"]', params='{"unknown": 5}'),
            predict('["q"]', params='{"k": "five"}'),
            predict('["q"]', params='{"k": 5.0}'),
            http({"inputs": ["q"], "params": {"k": 7}}),
            http({"inputs": ["q"], "params": {"unknown": 7}}),
            http({"inputs": ["q"], "params": {"k": "seven"}}),
        ],
    ),
    Case(
        "params_without_schema",
        ECHO_PARAMS,
        calls=[
            predict('["q"]', params='{"k": 5}'),
            http({"inputs": ["q"], "params": {"k": 7}}),
        ],
    ),
    Case(
        "params_with_input_only_signature",
        ECHO_PARAMS,
        setup="""
        from mlflow.models import infer_signature
        SIGNATURE = infer_signature(["a"])
        """,
        save="signature=SIGNATURE",
        calls=[
            predict('["q"]', params='{"k": 5}'),
            http({"inputs": ["q"], "params": {"k": 7}}),
        ],
    ),
    # ---------------------------------------------------------------- type hints
    Case(
        "list_str_hint",
        """
        class Upper(mlflow.pyfunc.PythonModel):
            def predict(self, model_input: list[str], params=None) -> list[str]:
                return [s.upper() for s in model_input]

        model = Upper()
        """,
        calls=[
            predict('["a", "b"]'),
            predict('"ab"'),
            predict('pd.DataFrame({"text": ["x", "y"]})'),
            predict("[1, 2]"),
            http({"inputs": ["a", "b"]}),
            http({"inputs": "ab"}),
            http({"dataframe_split": {"columns": ["t"], "data": [["a"], ["b"]]}}),
        ],
    ),
    # ---------------------------------------------------------------- input examples and signatures at save
    Case(
        "dict_input_example",
        ECHO,
        save='input_example={"prompt": "hello", "n": 2}',
        calls=[
            saved_signature(),
            predict('{"prompt": "hi", "n": 3}'),
            http({"dataframe_records": [{"prompt": "hi", "n": 3}]}),
            http({"inputs": {"prompt": "hi", "n": 3}}),
        ],
    ),
    Case(
        "list_input_example_infers_output",
        """
        class Lengths(mlflow.pyfunc.PythonModel):
            def predict(self, context, model_input, params=None):
                return [len(s) for s in model_input]

        model = Lengths()
        """,
        save='input_example=["ab", "cde"]',
        calls=[saved_signature(), predict('["xyz"]'), http({"inputs": ["xyz"]})],
    ),
    Case(
        "input_example_that_fails",
        """
        class Fails(mlflow.pyfunc.PythonModel):
            def predict(self, context, model_input, params=None):
                raise RuntimeError("needs a resource only present at serving time")

        model = Fails()
        """,
        save='input_example=["x"]',
        calls=[saved_signature()],
    ),
    Case(
        "pip_and_extra_requirements",
        ECHO,
        save='pip_requirements=["numpy"], extra_pip_requirements=["pandas"]',
        calls=[],
    ),
]
