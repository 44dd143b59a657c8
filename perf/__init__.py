"""Throughput perf tests for the served MobileBERT tasks: perf_analyzer, text-level load, and a side-by-side comparison.

    python -m perf analyzer --repository triton_repo --task fill_mask      # perf_analyzer sweep on realistic text
    python -m perf load --repository triton_repo --task question_answering  # the async client, closed loop
    python -m perf compare --repository triton_repo                         # (a) HF eager, (b) ORT INT8, (c) Triton
    python -m perf sweep --repository triton_repo                           # all of it: what `make bench` runs

Modules, one job each:
  environment  machine, versions, load average; perf_analyzer's binary and runtime libraries
  inputs       request data from the project corpus (natural lengths, or ~128 tokens) and perf_analyzer's JSON file
  stats        latency percentiles; Triton's per-model statistics, snapshotted and diffed around a run
  analyzer     runs perf_analyzer one (concurrency, batch) point at a time, parses its CSV and the server breakdown
  load         closed-loop text load through AsyncMobileBertClient (the path applications use)
  baselines    (a) transformers on PyTorch eager FP32 and (b) onnxruntime INT8 in-process, same decoding as the server
  compare      runs (a), (b), (c) one after the other on the same texts and thread budget, with the ratios
  report       results.json, CSV files, results.md and the PNG plots of one results folder
  serving      starts the pip-installed server on free ports for a built repository (only the models needed)
  sweep        the full run `make bench` calls
"""
