"""Which CPU a graph was validated on: the instruction sets that decide onnxruntime's kernels.

onnxruntime's MLAS picks its INT8 and FP32 kernels by CPUID (AVX2, AVX512-VNNI, AVX-VNNI, AMX, ...), so an INT8
graph validated on one CPU is only proven for CPUs with the same kernel-relevant flags. Manifests record this
signature; a build on a CPU with another signature re-runs the validation there.
"""

from __future__ import annotations

import platform
from pathlib import Path

# The flags MLAS dispatches on (plus bf16/fp16 ones other runtimes use); other flags do not change any kernel.
KERNEL_FLAGS = (
    "avx2",
    "fma",
    "avx512f",
    "avx512bw",
    "avx512vl",
    "avx512_vnni",
    "avx512_bf16",
    "avx512_fp16",
    "avx_vnni",
    "avx_vnni_int8",
    "amx_tile",
    "amx_int8",
    "amx_bf16",
)


def cpu_signature(cpuinfo: str | None = None) -> dict:
    """{"model": ..., "isa": [kernel-relevant flags]} of this machine (or of the given /proc/cpuinfo text)."""
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
        except OSError:
            cpuinfo = ""
    model, flags = platform.processor() or platform.machine(), set()
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        key = key.strip()
        if key == "model name" and value.strip():
            model = value.strip()
        elif key in ("flags", "Features"):
            flags = set(value.split())
            break  # the first processor speaks for all: the cores of one machine share a kernel choice
    return {"model": model, "isa": [f for f in KERNEL_FLAGS if f in flags]}


def same_kernels(a: dict | None, b: dict | None) -> bool:
    """Do two signatures select the same onnxruntime kernels? (Unknown signatures never match.)"""
    return bool(a) and bool(b) and a.get("isa") == b.get("isa")


# Instructions with which onnxruntime's U8S8 GEMM accumulates each u8 x s8 product pair exactly in 32 bits.
_EXACT_INT8_DOT = {"avx512_vnni", "avx_vnni", "amx_int8"}


def saturating_int8_kernel(cpu: dict | None = None) -> bool:
    """Does onnxruntime's U8S8 GEMM saturate on this CPU? On x86 without VNNI or AMX, MLAS multiplies with
    VPMADDUBSW, which adds two u8 x s8 products into a signed 16-bit lane: 255 x 127 x 2 overflows it. Measured on
    an AVX2-only AMD EPYC: the INT8 graph disagreed with exact integer arithmetic by 2.8% (relative), and exactly
    agreed with unsigned weights (onnxruntime's U8U8 kernel, which widens to 16 bits before multiplying)."""
    isa = set((cpu or cpu_signature())["isa"])
    return "avx2" in isa and not isa & _EXACT_INT8_DOT
