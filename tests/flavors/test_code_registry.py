"""``set_model``: each thread executing a models-from-code file gets its own slot."""

import threading

from servelm.flavors.pyfunc import load_model, save_model


def test_set_model_is_thread_safe(tmp_path):
    paths = []
    for i in range(8):
        p = tmp_path / f"m{i}.py"
        p.write_text(
            "import time\nfrom servelm.agents import PythonModel\nfrom servelm.flavors import set_model\n"
            f"class M(PythonModel):\n    def predict(self, context, model_input, params=None):\n        return {i}\n"
            "time.sleep(0.01)\nm = M()\ntime.sleep(0.01)\nset_model(m)\ntime.sleep(0.01)\n"
        )
        paths.append(p)
    errors = []

    def save(i):
        try:
            save_model(str(tmp_path / f"out{i}"), python_model=str(paths[i]))
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=save, args=(i,)) for i in range(8)]
    [t.start() for t in threads]
    [t.join() for t in threads]
    assert not errors
    assert [load_model(str(tmp_path / f"out{i}")).predict(None) for i in range(8)] == list(range(8))
