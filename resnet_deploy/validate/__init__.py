"""The validation harness: accuracy parity of every backend against the PyTorch reference (`check_parity`), and
latency/throughput with the one timing routine (`measure_latency`, `bench_bundle`); reports in `BUNDLE/reports/`.

Torch is imported inside the functions that need it, so importing this package stays cheap.
"""

from resnet_deploy.validate.bench import BenchReport, BenchRow, bench_bundle
from resnet_deploy.validate.ceiling import matmul_ceiling
from resnet_deploy.validate.latency import LatencySamples, LatencyStats, measure_latency, summarize
from resnet_deploy.validate.parity import BackendParity, ParityReport, check_parity, check_parity_arrays
from resnet_deploy.validate.report import write_reports

__all__ = ["BackendParity", "BenchReport", "BenchRow", "LatencySamples", "LatencyStats", "ParityReport",
           "bench_bundle", "check_parity", "check_parity_arrays", "matmul_ceiling", "measure_latency", "summarize",
           "write_reports"]
