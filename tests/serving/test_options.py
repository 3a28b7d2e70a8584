"""Typed options: ``split_options`` (objects and flat fields, fields win, unknown names and bad values
named) and ``cli_parameters`` (the ``servelm serve`` flags generated from the fields)."""

import inspect
from typing import Optional, get_args

import pytest
from pydantic import ValidationError

from servelm.serving.engines.registry import ENGINES
from servelm.serving.options import EngineName, EngineOptions, ServerOptions, cli_parameters, split_options


def test_defaults_without_anything():
    server, engine = split_options()
    assert server == ServerOptions() and engine == EngineOptions()
    assert (server.host, server.port, server.max_concurrency, server.timeout) == ("127.0.0.1", 8000, 64, 600.0)
    assert engine.engine is None and engine.engine_process is True


def test_flat_fields_go_to_their_model():
    server, engine = split_options(port=9000, api_key="k", max_num_seqs=8, engine="onnx")
    assert (server.port, server.api_key) == (9000, "k")
    assert (engine.max_num_seqs, engine.engine) == (8, "onnx")


def test_fields_win_over_objects():
    server, engine = split_options(
        ServerOptions(port=1234, workers=2), EngineOptions(max_num_seqs=4, device="cpu"), port=5678, max_num_seqs=16
    )
    assert (server.port, server.workers) == (5678, 2)  # the field wins; the rest of the object stays
    assert (engine.max_num_seqs, engine.device) == (16, "cpu")


def test_objects_are_not_changed():
    given = ServerOptions(port=1234)
    server, _ = split_options(given, port=5678)
    assert given.port == 1234 and server.port == 5678 and server is not given


def test_an_unknown_name_is_a_type_error_listing_the_known_ones():
    with pytest.raises(TypeError) as info:
        split_options(port=1, max_seqs=2, colour="red")
    message = str(info.value)
    assert "['colour', 'max_seqs']" in message and "known:" in message
    assert "'max_num_seqs'" in message and "'port'" in message and "'api_key'" in message


# split_options copies the objects with the raw values before validating them: a value of the wrong type
# makes pydantic warn while dumping that copy (PydanticSerializationUnexpectedValue), then is validated.
SERIALIZER_WARNING = pytest.mark.filterwarnings("ignore:Pydantic serializer warnings:UserWarning")


@SERIALIZER_WARNING
@pytest.mark.parametrize(
    "fields, named",
    [
        ({"port": 70000}, "option port:"),
        ({"max_concurrency": 0}, "option max_concurrency:"),
        ({"engine": "tgi"}, "option engine:"),
        ({"log_level": "loud"}, "option log_level:"),
        ({"timeout": "soon"}, "option timeout:"),
        ({"gpu_memory_utilization": 1.5}, "option gpu_memory_utilization:"),
    ],
)
def test_a_bad_value_is_a_value_error_naming_the_field(fields, named):
    with pytest.raises(ValueError) as info:
        split_options(**fields)
    assert str(info.value).startswith(named) and not isinstance(info.value, ValidationError)


@SERIALIZER_WARNING
def test_values_are_validated_and_coerced():
    server, engine = split_options(port="8080", timeout=5, engine_process="false")
    assert server.port == 8080 and server.timeout == 5.0 and engine.engine_process is False


def test_the_models_forbid_unknown_fields_and_check_assignments():
    with pytest.raises(ValidationError):
        ServerOptions(colour="red")
    options = EngineOptions()
    with pytest.raises(ValidationError):
        options.max_num_seqs = 0


def test_api_key_defaults_to_the_environment(monkeypatch):
    monkeypatch.setenv("SERVELM_API_KEY", "from-env")
    assert ServerOptions().api_key == "from-env" and split_options()[0].api_key == "from-env"
    assert split_options(api_key="given")[0].api_key == "given"
    monkeypatch.setenv("SERVELM_API_KEY", "")
    assert ServerOptions().api_key is None


def test_the_registrys_engines_are_the_literal_choices():
    assert get_args(EngineName) == ("auto", *ENGINES)
    for name in get_args(EngineName):
        assert split_options(engine=name)[1].engine == name


def test_cli_parameters_one_flag_per_field():
    parameters = {p.name: p for p in cli_parameters(ServerOptions, EngineOptions)}
    assert list(parameters) == [*ServerOptions.model_fields, *EngineOptions.model_fields]
    assert all(p.kind is inspect.Parameter.KEYWORD_ONLY for p in parameters.values())
    port = parameters["port"]
    assert port.annotation is int and port.default.param_decls == ("--port",) and port.default.default == 8000
    assert port.default.help == ServerOptions.model_fields["port"].description
    assert parameters["max_num_seqs"].default.param_decls == ("--max-num-seqs",)
    assert (
        parameters["served_model_name"].annotation == Optional[str]
        and parameters["served_model_name"].default.default is None
    )


def test_cli_parameters_booleans_literals_and_factories():
    parameters = {p.name: p for p in cli_parameters(ServerOptions, EngineOptions)}
    process = parameters["engine_process"]
    assert (
        process.annotation is bool
        and process.default.param_decls == ("--engine-process/--no-engine-process",)
        and process.default.default is True
    )
    assert parameters["stay_up_on_load_error"].default.param_decls == (
        "--stay-up-on-load-error/--no-stay-up-on-load-error",
    )
    assert (
        parameters["log_level"].annotation == Optional[str] and parameters["log_level"].default.default == "info"
    )  # a Literal parses as text
    assert parameters["engine"].annotation == Optional[str]
    api_key = parameters["api_key"]
    assert (
        api_key.default.default is None and api_key.default.show_default is False
    )  # a default factory (the environment) is not shown
    assert parameters["threads"].annotation == Optional[int]
