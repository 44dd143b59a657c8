"""Python-backend model sources the build copies into the repository: the onnxruntime runner, and the modules
the tokenizer and post-processing models import from their version folder (listed per task in deploy/tasks.py).
The plain-numpy decoding modules (probabilities, span_decoding, mask_filling) are imported by perf/baselines.py too.
"""
