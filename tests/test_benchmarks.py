"""The GPU benchmark must keep working where no GPU is lent: its reduced size runs on the CPU."""

import os
import re
import subprocess
import sys

import pytest
from bench.gpu import FULL, pass_tflop

from tests.postgres import REQUIRED as POSTGRES_REQUIRED
from tests.postgres import server_bindir


def test_flop_count_of_a_full_size_pass_matches_the_design_figure():
    # 1024x1024 output + 1024x1024 reference + 512 text tokens: about 165 TFLOP (112 linear, 53 attention).
    assert abs(pass_tflop(FULL, 4096 + 4096 + 512) - 165.4) < 0.5


def test_gpu_benchmark_runs_at_a_reduced_size_on_the_cpu():
    # The precision rows ride along (one process: each start costs ~10 s of imports): int8 goes through
    # the engine's quantize_module, and its weights hold fewer bytes than the unquantized ones.
    result = subprocess.run(
        [sys.executable, "-m", "bench.gpu", "--small", "--steps", "3", "--repeats", "1", "--memory", "gpu",
         "--device", "cpu", "--precisions", "none,int8", "--precision-steps", "1"],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    assert "| gpu | none | 3 |" in result.stdout and "| gpu | regular |" in result.stdout
    assert "fp8 and torch.compile need a CUDA GPU" in result.stdout
    assert "written to" not in result.stdout  # a test never rewrites docs/performance.md
    assert re.search(r"\| none \| the model dtype \| [\d.e-]+ \| 1\.00 \|", result.stdout)
    int8 = re.search(r"\| int8 \| int8 weights \| [\d.e-]+ \| (\d\.\d\d) \|", result.stdout)
    assert int8 and float(int8.group(1)) < 0.9, result.stdout[-2000:]


def test_gpu_benchmark_without_a_gpu_says_so_and_exits_cleanly():
    environment = {**os.environ, "CUDA_VISIBLE_DEVICES": ""}  # on a GPU machine too: never the full size here
    result = subprocess.run([sys.executable, "-m", "bench.gpu"], capture_output=True, text=True, timeout=120,
                            env=environment)  # fmt: skip
    assert result.returncode == 0 and "no CUDA GPU here" in result.stdout, result.stderr[-2000:]


def test_gpu_benchmark_refuses_to_publish_a_small_run():
    result = subprocess.run([sys.executable, "-m", "bench.gpu", "--small", "--write-docs"], capture_output=True,
                            text=True, timeout=120)  # fmt: skip
    assert result.returncode == 2 and "cannot be combined with --small" in result.stderr


def test_load_benchmark_prints_its_figures_and_loses_nothing():
    result = subprocess.run(
        [sys.executable, "-m", "bench.load", "--keys", "2", "--heavy", "3", "--light", "1", "--budget", "240"],
        capture_output=True, text=True, timeout=400,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    assert "statuses: {'success': 4}; not found again in the lists: 0" in result.stdout
    assert "create latency: p50" in result.stdout and "/health latency meanwhile" in result.stdout
    assert "fairness: light keys' median queue time / heavy key's =" in result.stdout


def test_scale_benchmark_prints_the_service_overhead_on_postgresql_against_sqlite():
    if server_bindir() is None and not POSTGRES_REQUIRED:
        pytest.skip("no PostgreSQL server binaries (initdb, pg_ctl); as root, `make test` installs them")
    result = subprocess.run(
        [sys.executable, "-m", "bench.scale", "--part", "database", "--overhead-count", "2"],
        capture_output=True, text=True, timeout=400,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    assert re.search(r"SQLite +\d+\.\d ms\n  PostgreSQL +\d+\.\d ms\n  ratio PostgreSQL/SQLite +\d", result.stdout)
    assert "throughput" not in result.stdout  # --part database: no Ray cluster
