"""Picking tokens: a request's ``SamplingParams`` (``params.py``), a row's sampling state and the choice it gets
(``choice.py``), and one sampler per array library with the same semantics (``torch_sampler.py``,
``numpy_sampler.py``)."""
