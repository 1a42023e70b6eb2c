"""Shared test configuration.

The same suite runs against every backend. Choose it with ``--device``
(or the ``MLX_KERNELS_TEST_DEVICE`` environment variable):

* ``cpu`` (default): the native CPU kernels on the CPU stream;
* ``gpu``: the GPU stream (CUDA or Metal, whichever MLX was built with).

References (``mx.quantized_matmul`` etc.) run on the same stream.
"""

import os

# Fill every output with NaN before our kernels write it: unwritten elements show.
os.environ.setdefault("MLX_KERNELS_POISON_OUTPUTS", "1")

import mlx.core as mx  # noqa: E402
import pytest  # noqa: E402


def pytest_addoption(parser):
    parser.addoption(
        "--device",
        default=os.environ.get("MLX_KERNELS_TEST_DEVICE", "cpu"),
        choices=["cpu", "gpu"],
        help="backend the parity tests run on",
    )


@pytest.fixture(scope="session")
def device(request):
    name = request.config.getoption("--device")
    if name == "gpu" and not (mx.metal.is_available() or mx.cuda.is_available()):
        pytest.fail("--device gpu asked for, but this MLX build has no GPU backend")
    return mx.gpu if name == "gpu" else mx.cpu


@pytest.fixture(autouse=True)
def _seed(request):
    # A different but reproducible draw for every test.
    mx.random.seed(abs(hash(request.node.nodeid)) % (2**31))
