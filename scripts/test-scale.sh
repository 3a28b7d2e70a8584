#!/usr/bin/env bash
# The scale-out tests in a venv of their own: servelm on Ray Serve (tests/serving/test_ray.py, a local Ray with
# num_cpus=2) and spark_udf (tests/flavors/pyfunc/test_spark.py, Spark local[2], which needs Java 17). ray[serve] and
# pyspark add ~1 GB and pin their own web-stack ranges, so they stay out of the main venv.
# Where servelm[ray,spark] cannot be installed (no wheel for this platform or Python), the tests are skipped with the reason.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m venv .venv-scale
if ! .venv-scale/bin/pip install --progress-bar off -e '.[ray,spark,transformers,client]' 'pytest>=8' 'pytest-asyncio>=0.23' \
        > .venv-scale/install.log 2>&1; then
    echo "SKIPPED Ray Serve and Spark tests: servelm[ray,spark] could not be installed here (see .venv-scale/install.log):"
    tail -n 3 .venv-scale/install.log
    exit 0
fi
export RAY_AUTH_MODE=disabled RAY_USAGE_STATS_ENABLED=0
.venv-scale/bin/python -m pytest -q tests/serving/test_ray.py tests/flavors/pyfunc/test_spark.py
