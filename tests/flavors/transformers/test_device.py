"""Where and in what precision the transformers engine runs (``choose_device``)."""

import pytest

torch = pytest.importorskip("torch")

from servelm.flavors.transformers.device import choose_device  # noqa: E402


def test_the_cpu_is_the_default_without_cuda_and_dtypes_are_honoured():
    if torch.cuda.is_available():
        pytest.skip("this machine has a CUDA device")
    device, dtype = choose_device("float32")
    assert device.type == "cpu" and dtype == torch.float32


@pytest.mark.parametrize("device", ["cuda", "cuda:1", "cuda:x"])
def test_a_cuda_device_that_is_not_there_is_refused_with_what_is(device):
    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if device != "cuda:x" and int(device.partition(":")[2] or 0) < count:
        pytest.skip(f"this machine has {device}")
    with pytest.raises(ValueError, match=f"this machine has {count} CUDA device"):
        choose_device(None, device)


def test_a_bad_dtype_is_named():
    with pytest.raises(ValueError, match="dtype must be one of"):
        choose_device("int4")
