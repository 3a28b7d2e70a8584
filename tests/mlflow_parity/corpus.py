"""The parity corpus: MLflow code, saved and called as MLflow users do. A new parity bug is one more Case.

Models mostly answer ``describe(model_input)`` (see harness.DESCRIBE), so a case compares what each system
*handed the model* (types, dtypes, shapes, column order), not only what came back.
"""

from __future__ import annotations

from harness import Case, csv, http, predict, saved_signature, serving_example

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
            predict("np.array([[1.0, 2.0]], dtype=np.float32)"),
            predict("np.array([[1.0, 2.0]], dtype=np.float64)"),
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
            serving_example(),
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
                return [len(s) for s in model_input.iloc[:, 0]]

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
    # ---------------------------------------------------------------- more column signatures
    Case(
        "add_n_dataframe_model",  # the pyfunc reference's first example
        """
        class AddN(mlflow.pyfunc.PythonModel):
            def __init__(self, n):
                self.n = n

            def predict(self, context, model_input, params=None):
                return model_input.apply(lambda column: column + self.n)

        model = AddN(n=5)
        """,
        save='input_example=pd.DataFrame({"a": [1.0, 2.0], "b": [3.0, 4.0]})',
        calls=[
            saved_signature(),
            serving_example(),
            predict('pd.DataFrame({"a": [10.0], "b": [0.5]})'),
            predict('pd.DataFrame({"b": [0.5], "a": [10.0]})'),
            predict('pd.DataFrame({"a": [10], "b": [1]})'),
            predict('pd.DataFrame({"a": [10], "b": [0]})'),
            http({"dataframe_split": {"columns": ["a", "b"], "data": [[10, 0.5]]}}),
            http({"dataframe_records": [{"b": 0.5, "a": 10}]}),
            http({"inputs": {"a": [1.0], "b": [2.0]}}),
            http({"instances": [{"a": 1.0, "b": 2.0}]}),
            csv("a,b\n10,0.5\n"),
            csv(",a,b\n0,10,0.5\n"),
        ],
    ),
    Case(
        "unnamed_string_column",
        ECHO,
        setup="""
        from mlflow.models import infer_signature
        SIGNATURE = infer_signature(["a", "b"])
        """,
        save="signature=SIGNATURE",
        calls=[
            predict('["x", "y"]'),
            predict('"x"'),
            predict('pd.DataFrame({"q": ["x"]})'),
            predict("[1, 2]"),
            http({"inputs": ["x", "y"]}),
            http({"inputs": "x"}),
            http({"instances": ["x"]}),
            http({"dataframe_split": {"columns": ["q"], "data": [["x"]]}}),
            http({"inputs": [1, 2]}),
        ],
    ),
    Case(
        "optional_and_boolean_columns",
        ECHO,
        setup="""
        from mlflow.models import ModelSignature
        from mlflow.types.schema import ColSpec, Schema
        SIGNATURE = ModelSignature(inputs=Schema([
            ColSpec("boolean", "flag"), ColSpec("string", "note", required=False), ColSpec("integer", "i"),
        ]))
        """,
        save="signature=SIGNATURE",
        calls=[
            predict('pd.DataFrame({"flag": [True], "i": np.array([1], dtype=np.int32)})'),
            predict('pd.DataFrame({"flag": [True], "i": [1]})'),
            predict('pd.DataFrame({"flag": [1], "i": np.array([1], dtype=np.int32)})'),
            predict('{"flag": True, "note": "n", "i": np.int32(2)}'),
            http({"dataframe_records": [{"flag": True, "i": 3}]}),
            http({"dataframe_records": [{"flag": True, "note": None, "i": 3}]}),
            http({"dataframe_records": [{"note": "n", "i": 3}]}),
            http({"inputs": {"flag": [True], "i": [3]}}),
            csv("flag,i\nTrue,3\n"),
        ],
    ),
    Case(
        "array_and_object_columns",
        ECHO,
        setup="""
        from mlflow.models import infer_signature
        SIGNATURE = infer_signature({"tags": ["a", "b"], "meta": {"k": 1}})
        """,
        save="signature=SIGNATURE",
        calls=[
            saved_signature(),
            predict('{"tags": ["x"], "meta": {"k": 2}}'),
            predict('{"tags": "x", "meta": {"k": 2}}'),
            predict('{"tags": ["x"], "meta": {"k": "two"}}'),
            http({"dataframe_records": [{"tags": ["x", "y"], "meta": {"k": 2}}]}),
            http({"inputs": {"tags": ["x"], "meta": {"k": 2}}}),
            http({"dataframe_records": [{"tags": [1], "meta": {"k": 2}}]}),
        ],
    ),
    Case(
        "binary_column",
        """
        class Sizes(mlflow.pyfunc.PythonModel):
            def predict(self, context, model_input, params=None):
                return [len(v) for v in model_input["blob"]]

        model = Sizes()
        """,
        setup="""
        from mlflow.models import ModelSignature
        from mlflow.types.schema import ColSpec, Schema
        SIGNATURE = ModelSignature(inputs=Schema([ColSpec("binary", "blob")]))
        """,
        save="signature=SIGNATURE",
        calls=[
            predict('pd.DataFrame({"blob": [b"abc"]})'),
            predict('pd.DataFrame({"blob": ["abc"]})'),
            http({"dataframe_records": [{"blob": "AAEC"}]}),
            http({"dataframe_split": {"columns": ["blob"], "data": [["AAECAw=="]]}}),
            http({"dataframe_records": [{"blob": "not base64!"}]}),
        ],
    ),
    # ---------------------------------------------------------------- tensors with more dimensions
    Case(
        "tensor_3d_from_dataframe_of_lists",
        ECHO,
        setup="""
        from mlflow.models import ModelSignature
        from mlflow.types.schema import Schema, TensorSpec
        SIGNATURE = ModelSignature(inputs=Schema([TensorSpec(np.dtype("float64"), (-1, 2, 2))]))
        """,
        save="signature=SIGNATURE",
        calls=[
            predict("np.zeros((1, 2, 2))"),
            predict("np.zeros((1, 4))"),
            predict('pd.DataFrame({"x": [[1.0, 2.0, 3.0, 4.0]]})'),
            http({"inputs": [[[1, 2], [3, 4]]]}),
            http({"dataframe_split": {"columns": ["x"], "data": [[[1, 2, 3, 4]]]}}),
            http({"instances": [[[1, 2], [3]]]}),
        ],
    ),
    # ---------------------------------------------------------------- outputs
    Case(
        "outputs_of_every_kind",
        """
        class Outputs(mlflow.pyfunc.PythonModel):
            def predict(self, context, model_input, params=None):
                kind = model_input["kind"][0]
                if kind == "frame":
                    return pd.DataFrame({"a": [1, 2], "b": ["x", "y"]})
                if kind == "series":
                    return pd.Series([1.5, 2.5], name="s")
                if kind == "array":
                    return np.arange(4).reshape(2, 2)
                if kind == "dict_of_arrays":
                    return {"a": np.array([1, 2]), "b": np.array([0.5])}
                if kind == "datetime":
                    return [pd.Timestamp("2024-01-02T03:04:05")]
                if kind == "scalar":
                    return np.float32(0.25)
                if kind == "string":
                    return "text"
                return None

        model = Outputs()
        """,
        save='input_example=pd.DataFrame({"kind": ["frame"]})',
        calls=[saved_signature()]
        + [
            http({"dataframe_records": [{"kind": kind}]})
            for kind in ("frame", "series", "array", "dict_of_arrays", "datetime", "scalar", "string", "none")
        ]
        + [predict('pd.DataFrame({"kind": ["frame"]})'), predict('pd.DataFrame({"kind": ["dict_of_arrays"]})')],
    ),
    # ---------------------------------------------------------------- type hints and callables
    Case(
        "pydantic_hint",
        """
        class Question(pydantic.BaseModel):
            text: str
            n: int = 1

        class Repeat(mlflow.pyfunc.PythonModel):
            def predict(self, model_input: list[Question], params=None) -> list[str]:
                return [q.text * q.n for q in model_input]

        model = Repeat()
        """,
        setup="import pydantic\n",
        calls=[
            saved_signature(),
            predict('[{"text": "ab", "n": 2}]'),
            predict('[{"text": "ab"}]'),
            predict('[{"n": 2}]'),
            predict('pd.DataFrame([{"text": "x", "n": 3}])'),
            http({"inputs": [{"text": "ab", "n": 2}]}),
            http({"inputs": [{"n": 2}]}),
            http({"dataframe_records": [{"text": "ab", "n": 2}]}),
        ],
    ),
    Case(
        "list_of_dicts_hint",
        """
        class Keys(mlflow.pyfunc.PythonModel):
            def predict(self, model_input: list[dict[str, str]], params=None) -> list[str]:
                return [",".join(sorted(d)) for d in model_input]

        model = Keys()
        """,
        calls=[
            predict('[{"a": "1", "b": "2"}]'),
            predict('[{"a": 1}]'),
            http({"inputs": [{"a": "1"}]}),
        ],
    ),
    # ---------------------------------------------------------------- request bodies
    Case(
        "body_details",
        ECHO,
        calls=[
            http({"inputs": [1], "unknown_key": 1}),
            http({"inputs": [1], "params": "not a dict"}),
            http({"inputs": [1], "instances": [2]}),
            http({}),
            http({"inputs": []}),
            http({"dataframe_split": {"data": [[1, 2]]}}),
            http({"dataframe_split": {"columns": ["a"], "data": [[1, 2]]}}),
            http({"dataframe_records": {"a": 1}}),
            csv("a,b\n1\n"),
            csv(""),
        ],
    ),
    Case(
        "model_errors",
        """
        class Fails(mlflow.pyfunc.PythonModel):
            def predict(self, context, model_input, params=None):
                raise ValueError("the model's own bug")

        model = Fails()
        """,
        calls=[predict("[1]"), http({"inputs": [1]})],
        deliberate="a model's own exception is a 500 (MLflow answers 400, as if the client were at fault)",
    ),
    Case(
        "bare_list_of_records",
        ECHO,
        calls=[http([{"a": 1}])],
        deliberate="a bare list of records is read as dataframe_records (MLflow 1.x's default; MLflow 3 answers 400)",
    ),
    Case(
        "stream_on_invocations",
        """
        class Words(mlflow.pyfunc.PythonModel):
            def predict(self, context, model_input, params=None):
                return [" ".join(model_input)]

            def predict_stream(self, context, model_input, params=None):
                yield from model_input

        model = Words()
        """,
        calls=[http({"inputs": ["a", "b"]}), http({"inputs": ["a", "b"], "stream": True})],
        deliberate="`stream: true` streams predict_stream's output (MLflow ignores the key and predicts)",
    ),
    Case(
        "tf_serving_b64",
        ECHO,
        calls=[http({"inputs": {"blob": [{"b64": "AAEC"}]}})],
        deliberate='TF serving\'s {"b64": ...} values become bytes (MLflow passes the dicts on)',
    ),
    # ---------------------------------------------------------------- agents and chat models through pyfunc
    Case(
        "chat_model",
        """
        from mlflow.types.llm import ChatChoice, ChatCompletionResponse, ChatMessage

        class EchoChat(mlflow.pyfunc.ChatModel):
            def predict(self, context, messages, params):
                reply = ChatMessage(role="assistant", content=f"{messages[-1].content}:{params.temperature}")
                choices = [ChatChoice(index=0, message=reply)]
                return ChatCompletionResponse(id="c", created=1, model="m", choices=choices)

        model = EchoChat()
        """,
        calls=[
            predict('{"messages": [{"role": "user", "content": "hi"}], "temperature": 0.5}'),
            predict('{"messages": [{"role": "user", "content": "hi"}]}'),
            http({"messages": [{"role": "user", "content": "hi"}], "temperature": 0.5}),
            http({"dataframe_records": [{"messages": [{"role": "user", "content": "hi"}]}]}),
        ],
    ),
    Case(
        "chat_agent",
        """
        from mlflow.types.agent import ChatAgentMessage, ChatAgentResponse

        class EchoAgent(mlflow.pyfunc.ChatAgent):
            def predict(self, messages, context=None, custom_inputs=None):
                text = messages[-1].content + str((custom_inputs or {}).get("k", ""))
                return ChatAgentResponse(messages=[ChatAgentMessage(role="assistant", content=text, id="a")])

        model = EchoAgent()
        """,
        calls=[
            predict('{"messages": [{"role": "user", "content": "hi"}]}'),
            predict('{"messages": [{"role": "user", "content": "hi"}], "custom_inputs": {"k": 1}}'),
            http({"messages": [{"role": "user", "content": "hi"}]}),
            http({"messages": [{"role": "user", "content": "hi"}], "custom_inputs": {"k": 2}}),
        ],
    ),
    Case(
        "responses_agent",
        """
        from mlflow.types.responses import ResponsesAgentResponse

        class EchoResponses(mlflow.pyfunc.ResponsesAgent):
            def predict(self, request):
                text = request.input[-1].content
                return ResponsesAgentResponse(output=[self.create_text_output_item(text, "m1")], id="r", created_at=1)

        model = EchoResponses()
        """,
        calls=[
            predict('{"input": [{"role": "user", "content": "hi"}]}'),
            http({"input": [{"role": "user", "content": "hi"}]}),
        ],
        deliberate="output items are wire-valid OpenAI Responses items (status, logprobs: []); MLflow's lack them",
    ),
]
