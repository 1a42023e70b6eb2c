"""Shared test configuration.

The same suite runs against every backend; each test that takes the
``device`` fixture runs once per selected backend:

* ``cpu``: the native CPU kernels on the CPU stream;
* ``metal-sim``: the CPU stream, with our ops evaluated by the package's
  Metal kernels in the Metal simulator (docs/metal-simulator.md);
  ``MLX_KERNELS_METAL_SIM_SHUFFLE=<seed>`` adds the shuffled schedule;
* ``gpu``: the GPU stream (CUDA or Metal, whichever MLX was built with).

Select with ``--device cpu,metal-sim`` (the default) or the
``MLX_KERNELS_TEST_DEVICE`` environment variable. References
(``mx.quantized_matmul`` etc.) run on the same stream, natively.
"""

import os
import zlib

# Fill every output with NaN before our kernels write it: unwritten elements show.
os.environ.setdefault("MLX_KERNELS_POISON_OUTPUTS", "1")

import mlx.core as mx  # noqa: E402
import pytest  # noqa: E402

import mlx_kernels as mk  # noqa: E402

BACKENDS = ("cpu", "metal-sim", "gpu")


def pytest_addoption(parser):
    parser.addoption(
        "--device",
        default=os.environ.get("MLX_KERNELS_TEST_DEVICE", "cpu,metal-sim"),
        help="comma-separated backends to run the parity tests on: " + ", ".join(BACKENDS),
    )


def _selected(config):
    names = [n.strip() for n in config.getoption("--device").split(",") if n.strip()]
    unknown = [n for n in names if n not in BACKENDS]
    if unknown:
        raise pytest.UsageError(f"--device: unknown backend(s) {unknown}; choose from {BACKENDS}")
    return names


def pytest_report_header(config):
    ok, why = mk._ext.metal_simulator_status()
    sim = "available" if ok else f"NOT available ({why})"
    return [f"mlx_kernels backends under test: {', '.join(_selected(config))}; Metal simulator {sim}"]


def pytest_generate_tests(metafunc):
    if "device" in metafunc.fixturenames:
        metafunc.parametrize("backend", _selected(metafunc.config), scope="session")


@pytest.fixture
def device(backend):
    """The stream a test runs on; under metal-sim, our ops run simulated."""
    if backend == "gpu":
        if not (mx.metal.is_available() or mx.cuda.is_available()):
            pytest.fail("--device gpu asked for, but this MLX build has no GPU backend")
        yield mx.gpu
    elif backend == "metal-sim":
        ok, why = mk._ext.metal_simulator_status()
        if not ok:
            pytest.skip(f"Metal simulator not built: {why}")
        seed = os.environ.get("MLX_KERNELS_METAL_SIM_SHUFFLE")
        with mk.metal_simulator(shuffle=bool(seed), seed=int(seed or 0)):
            yield mx.cpu
    else:
        yield mx.cpu


@pytest.fixture(autouse=True)
def _seed(request):
    # A different but reproducible draw for every test.
    mx.random.seed(zlib.crc32(request.node.nodeid.encode()))
