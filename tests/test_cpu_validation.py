"""Graphs carry the CPUs they were validated on; serving on another CPU says so (no server, no export needed)."""

from __future__ import annotations

import json

from deploy.cli import main as deploy_main
from deploy.cpu_check import graphs_not_validated_here
from export.cpu import cpu_signature, same_kernels, saturating_int8_kernel
from export.quantize import DynamicSettings

OTHER_CPU = {"model": "Intel(R) Xeon(R) Platinum 8480+", "isa": ["avx2", "avx512f", "amx_tile", "amx_int8"]}


def _manifest(repository, model: str, flavour: str, validated_on: list[dict]) -> None:
    folder = repository / model / "1"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"model.{flavour}.json").write_text(json.dumps({"flavour": flavour, "validated_on": validated_on}))


def test_graphs_validated_only_on_another_cpu_are_listed(tmp_path):
    _manifest(tmp_path, "fill_mask_onnx", "int8-dynamic", [OTHER_CPU])
    _manifest(tmp_path, "question_answering_onnx", "int8-dynamic", [OTHER_CPU, cpu_signature()])
    _manifest(tmp_path, "question_answering_onnx", "fp32", [])
    _manifest(tmp_path, "question_answering_onnx", "int8-qdq", [OTHER_CPU])  # TensorRT's graph: not CPU-served
    assert graphs_not_validated_here(tmp_path) == [
        "fill_mask_onnx/model.int8-dynamic",
        "question_answering_onnx/model.fp32",
    ]


def test_kernel_signatures_match_on_flags_not_on_the_model_name():
    here = cpu_signature()
    assert same_kernels(here, {"model": "another name", "isa": list(here["isa"])})
    assert not same_kernels(here, {**here, "isa": [*here["isa"], "amx_fp16"]})
    assert not same_kernels(here, None) and not same_kernels({}, here)


def test_serve_warns_about_graphs_not_validated_on_this_cpu(tmp_path, capsys):
    _manifest(tmp_path, "fill_mask_onnx", "int8-dynamic", [OTHER_CPU])
    # No tritonserver is needed to see the warning: the mismatched TLS options end the command right after it.
    code = deploy_main(["serve", "--repository", str(tmp_path), "--tls-cert", str(tmp_path / "cert.pem")])
    err = capsys.readouterr().err
    assert code == 1
    assert "fill_mask_onnx/model.int8-dynamic" in err and "other CPUs only" in err and "deploy build" in err


def test_int8_weights_are_unsigned_exactly_where_the_cpu_kernel_saturates():
    zen1 = {"model": "AMD EPYC", "isa": ["avx2", "fma"]}
    skylake = {"model": "Intel Xeon Gold 6148", "isa": ["avx2", "fma", "avx512f", "avx512bw", "avx512vl"]}
    zen4 = {"model": "AMD EPYC 9R14", "isa": ["avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16"]}
    alder = {"model": "12th Gen Intel Core", "isa": ["avx2", "fma", "avx_vnni"]}
    arm = {"model": "aarch64", "isa": []}
    assert saturating_int8_kernel(zen1) and saturating_int8_kernel(skylake)
    assert not any(saturating_int8_kernel(c) for c in (zen4, alder, OTHER_CPU, arm))
    # the export's default follows this CPU, and an explicit setting wins
    expected = "QUInt8" if saturating_int8_kernel(cpu_signature()) else "QInt8"
    assert DynamicSettings().weight_type == expected
    assert DynamicSettings(weight_type="QInt8").weight_type == "QInt8"
