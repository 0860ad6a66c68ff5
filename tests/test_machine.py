"""This machine's CPU facts (runtime/machine.py) read from cpuinfo files of other CPUs, and the precision choices made
from them: training's run.amp=auto on CPUs and (with CUDA facts patched) GPUs, `auto`'s inference order, doctor."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from resnet_deploy.cli import main
from resnet_deploy.runtime import Predictor, autotune, available_backends, machine, predictor, variants
from resnet_deploy.runtime.errors import ResnetDeployError
from resnet_deploy.runtime.openvino_backend import ov_installed
from resnet_deploy.train import precision
from resnet_deploy.train.precision import choose_amp

# First-core excerpts of /proc/cpuinfo. Zen 2 is the AVX2-only EPYC (family 23, model 49) on which emulated bf16
# trained 12x slower than fp32; Cascade Lake has VNNI but no bf16; Sapphire Rapids both, with AMX; Graviton 3 is Arm.
CPUS = {
    "zen2": ("AMD EPYC 7B12", "fpu vme de pse tsc msr pae mce cx8 apic sse sse2 ht syscall nx mmxext fxsr_opt pdpe1gb "
             "rdtscp lm constant_tsc rep_good nopl pni pclmulqdq ssse3 fma cx16 sse4_1 sse4_2 movbe popcnt aes xsave "
             "avx f16c rdrand hypervisor lahf_lm cmp_legacy abm sse4a misalignsse 3dnowprefetch bmi1 avx2 smep bmi2 "
             "rdseed adx smap clflushopt clwb sha_ni xsaveopt xsavec xgetbv1 clzero xsaveerptr arat umip rdpid"),
    "cascadelake": ("Intel(R) Xeon(R) Platinum 8259CL CPU @ 2.50GHz", "fpu sse sse2 ssse3 fma sse4_1 sse4_2 avx f16c "
                    "avx2 avx512f avx512dq avx512cd avx512bw avx512vl avx512_vnni"),
    "sapphirerapids": ("Intel(R) Xeon(R) Platinum 8488C", "sse4_2 avx avx2 fma avx512f avx512bw avx512vl avx512_vnni "
                       "avx_vnni avx512_bf16 amx_bf16 amx_tile amx_int8 avx512_fp16"),
}


def cpuinfo(tmp_path: Path, name: str) -> Path:
    model, flags = CPUS[name]
    path = tmp_path / name
    path.write_text(f"processor\t: 0\nvendor_id\t: x\nmodel name\t: {model}\nflags\t\t: {flags}\n\n"
                    f"processor\t: 1\nmodel name\t: {model}\nflags\t\t: fpu\n")
    return path


@pytest.fixture
def cpu(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """Make this process see another CPU: `cpu("zen2")` points every cpuinfo read at that CPU's file (with no
    instruction-set cap in the environment; `cpu("sapphirerapids", ONEDNN_MAX_CPU_ISA="AVX2")` sets one)."""
    def use(name: str, **caps: str) -> None:
        monkeypatch.setattr(machine, "CPUINFO", str(cpuinfo(tmp_path, name)))
        for k in machine.ISA_CAPS:
            monkeypatch.delenv(k, raising=False)
        for k, v in caps.items():
            monkeypatch.setenv(k, v)
    return use


def test_cpuinfo_of_x86_and_arm_and_of_no_file(tmp_path: Path) -> None:
    (tmp_path / "arm").write_text("processor\t: 0\nFeatures\t: fp asimd asimddp\n")
    assert machine.cpu_flags(cpuinfo(tmp_path, "cascadelake")) >= {"avx512_vnni", "avx2"}
    assert "avx512_bf16" not in machine.cpu_flags(cpuinfo(tmp_path, "cascadelake"))
    assert machine.cpu_model(cpuinfo(tmp_path, "zen2")) == "AMD EPYC 7B12"
    assert machine.cpu_flags(tmp_path / "arm") == {"fp", "asimd", "asimddp"}
    assert machine.cpu_flags(tmp_path / "absent") == set()


@pytest.mark.parametrize("name, native", [
    ("zen2", {"fp32": ()}),
    ("cascadelake", {"fp32": (), "int8": ("avx512_vnni",)}),
    ("sapphirerapids", {"fp32": (), "bf16": ("avx512_bf16", "amx_bf16"), "int8": ("avx512_vnni", "avx_vnni",
                                                                               "amx_int8")}),
])
def test_native_precisions_per_cpu(tmp_path: Path, name: str, native: dict) -> None:
    flags = machine.cpu_flags(cpuinfo(tmp_path, name))
    assert machine.native_precisions(flags) == native
    assert machine.cpu_has_bf16(flags)[0] == ("bf16" in native)
    assert machine.cpu_int8_is_fast(flags)[0] == ("int8" in native)
    if "bf16" not in native:
        assert machine.cpu_has_bf16(flags)[1] == ("CPU lacks bf16 instructions (avx512_bf16, amx_bf16); bf16 would "
                                                  "be emulated, slower than fp32")


@pytest.mark.parametrize("caps, native", [
    ({}, {"fp32": (), "bf16": ("avx512_bf16", "amx_bf16"), "int8": ("avx512_vnni", "avx_vnni", "amx_int8")}),
    ({"ONEDNN_MAX_CPU_ISA": "AVX2"}, {"fp32": ()}),
    ({"DNNL_MAX_CPU_ISA": "avx2_vnni"}, {"fp32": (), "int8": ("avx_vnni",)}),
    ({"ONEDNN_MAX_CPU_ISA": "AVX512_CORE_VNNI"}, {"fp32": (), "int8": ("avx512_vnni",)}),
    ({"ONEDNN_MAX_CPU_ISA": "AVX512_CORE_BF16"}, {"fp32": (), "bf16": ("avx512_bf16",), "int8": ("avx512_vnni",)}),
    ({"ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX512_CORE_AMX"}, {"fp32": ()}),  # the lowest cap wins
    ({"ATEN_CPU_CAPABILITY": "avx512"}, None),  # torch's highest level caps nothing
    ({"ONEDNN_MAX_CPU_ISA": "ALL"}, None),
])
def test_an_instruction_set_cap_is_the_capped_cpu_class(cpu, caps: dict, native: dict | None) -> None:
    """Under ONEDNN_MAX_CPU_ISA=AVX2 (an emulation of an AVX2-only CPU) the libraries emulate what lies above AVX2,
    so the precisions that decide train and auto are the capped class's, and its key is another machine's."""
    cpu("sapphirerapids")
    uncapped = machine.native_precisions(), autotune.machine_key()
    cpu("sapphirerapids", **caps)
    assert machine.native_precisions() == (native or uncapped[0])
    assert machine.cpu_flags() >= {"avx512_bf16", "amx_int8"}  # the CPU's own flags are unchanged
    key = autotune.machine_key()
    assert (key == uncapped[1]) == (not caps)
    assert key.get("isa_caps") == (machine.caps_text(caps) if caps else None)
    assert (key["flags"] == uncapped[1]["flags"]) == (not caps or native is None)  # the usable flags, digested


def test_a_cap_says_what_it_hides(cpu) -> None:
    cpu("sapphirerapids", ONEDNN_MAX_CPU_ISA="AVX2")
    assert machine.cpu_has_bf16() == (False, "ONEDNN_MAX_CPU_ISA=AVX2 hides the CPU's bf16 instructions (avx512_bf16, "
                                              "amx_bf16); bf16 would be emulated, slower than fp32")
    assert machine.cpu_int8_is_fast()[1] == ("ONEDNN_MAX_CPU_ISA=AVX2 hides the CPU's int8 dot-product instructions "
                                             "(avx512_vnni, avx_vnni, amx_int8); int8 is expected slower than fp32")
    # flags given are taken as they are: the question is about that CPU, not this process
    assert machine.cpu_has_bf16(machine.cpu_flags())[0]


# ---------------------------------------------------------------------------------------------- training, on CPUs
def test_auto_trains_bf16_only_where_the_cpu_has_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(precision, "torch_cpu_capability", lambda: "AVX512")
    zen2 = machine.cpu_flags(cpuinfo(tmp_path, "zen2"))
    spr = machine.cpu_flags(cpuinfo(tmp_path, "sapphirerapids"))
    c = choose_amp("auto", "cpu", zen2)
    assert (c.amp, c.dtype, c.grad_scaler, c.warning) == ("none", None, False, None)
    assert c.summary() == ("precision: fp32 (run.amp=auto: CPU lacks bf16 instructions (avx512_bf16, amx_bf16); "
                           "bf16 would be emulated, slower than fp32)")
    c = choose_amp("auto", "cpu", spr)
    assert (c.amp, c.dtype, c.warning) == ("bf16", torch.bfloat16, None)
    assert c.summary() == "precision: bf16 autocast (run.amp=auto: CPU has bf16 instructions (avx512_bf16, amx_bf16))"
    assert choose_amp("auto", "cpu", machine.cpu_flags(cpuinfo(tmp_path, "cascadelake"))).amp == "none"
    # torch capped below AVX-512 (ATEN_CPU_CAPABILITY=avx2) emulates bf16 even on a CPU that has it
    monkeypatch.setattr(precision, "torch_cpu_capability", lambda: "AVX2")
    c = choose_amp("auto", "cpu", spr)
    assert c.amp == "none" and c.reason.endswith("but torch runs its AVX2 kernels (ATEN_CPU_CAPABILITY), which "
                                                 "emulate bf16")


def test_explicit_bf16_on_an_emulating_cpu_trains_as_asked_and_warns_once(tmp_path: Path,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(precision, "torch_cpu_capability", lambda: "AVX512")
    zen2 = machine.cpu_flags(cpuinfo(tmp_path, "zen2"))
    c = choose_amp("bf16", "cpu", zen2)
    assert (c.amp, c.dtype) == ("bf16", torch.bfloat16)
    assert c.summary() == "precision: bf16 autocast (run.amp=bf16)"
    assert c.warnings() == ["warning: run.amp=bf16 on a device without native bf16 (CPU lacks bf16 instructions "
                            "(avx512_bf16, amx_bf16); bf16 would be emulated, slower than fp32): it is emulated, "
                            "expect about 10x slower training than fp32 (9-12x measured on AVX2 CPUs); run.amp=auto "
                            "trains in fp32 here"]
    assert choose_amp("bf16", "cpu", machine.cpu_flags(cpuinfo(tmp_path, "sapphirerapids"))).warnings() == []
    assert choose_amp("none", "cpu", zen2).warnings() == []
    with pytest.raises(ResnetDeployError, match=r"^run.amp=fp16 needs a CUDA GPU \(a GradScaler on fp16\); use "):
        choose_amp("fp16", "cpu", zen2)
    with pytest.raises(ResnetDeployError, match=r"^unknown run.amp 'fp8'; choose one of: auto, none, bf16, fp16$"):
        choose_amp("fp8", "cpu", zen2)


# ------------------------------------------------------------------------------------- training, on (patched) GPUs
@pytest.mark.parametrize("gpu, capability, amp, scaler", [
    ("NVIDIA H200", (9, 0), "bf16", False),
    ("NVIDIA A100-SXM4-80GB", (8, 0), "bf16", False),
    ("Tesla T4", (7, 5), "fp16", True),
    ("Tesla V100-SXM2-16GB", (7, 0), "fp16", True),
])
def test_auto_on_gpus_bf16_from_ampere_else_fp16_with_a_grad_scaler(monkeypatch: pytest.MonkeyPatch, gpu: str,
                                                                    capability: tuple, amp: str, scaler: bool) -> None:
    monkeypatch.setattr(torch.version, "hip", None, raising=False)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda i=None: gpu)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda i=None: capability)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    c = choose_amp("auto", "cuda:0")
    assert (c.amp, c.grad_scaler) == (amp, scaler)
    assert c.reason.startswith(f"{gpu}, compute capability {capability[0]}.{capability[1]}")
    explicit = choose_amp("bf16", "cuda:0")
    assert explicit.amp == "bf16" and bool(explicit.warning) == (amp == "fp16")
    if explicit.warning:
        assert explicit.warning.endswith("it is emulated, expect it slower than fp16 + GradScaler (not measured "
                                         "here); run.amp=auto trains in fp16 autocast + GradScaler here")
    assert choose_amp("fp16", "cuda:0").grad_scaler and choose_amp("none", "cuda:0").dtype is None


# --------------------------------------------------------------------------------------------- inference and doctor
def test_inference_auto_puts_int8_behind_fp32_on_a_cpu_without_int8_dot_products(cpu) -> None:
    cpu("zen2")
    order, why = predictor.auto_order("cpu")
    # ONNX Runtime's int8 needs the dot products; OpenVINO's int8 measured faster than its fp32 without them
    assert order.index("onnx") < order.index("int8") and order.index("ov-int8") < order.index("onnx")
    assert why.startswith(f"{autotune.UNMEASURED}: CPU lacks int8 dot-product instructions")
    assert why.endswith("int8 is expected slower than fp32 on onnxruntime")
    cpu("cascadelake")
    order, _ = predictor.auto_order("cpu")
    assert order[:3] == ("int8", "ov-int8", "onnx")
    assert order == tuple(v.name for v in variants.ranked("cpu"))


def test_doctor_lists_native_precisions_and_what_train_and_auto_use(cpu, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(precision, "torch_cpu_capability", lambda: "AVX512")
    cpu("zen2")
    r = CliRunner().invoke(main, ["doctor", "--json"])
    assert r.exit_code == 0, r.output
    rows = {row["component"]: row for row in json.loads(r.output)}
    assert rows["CPU"]["detail"] == "AMD EPYC 7B12; native: fp32; emulated or slow: bf16, int8"
    assert rows["training precision"]["detail"].startswith("run.amp=auto on cpu: fp32 (CPU lacks bf16 instructions")
    assert rows["inference auto"]["detail"].startswith("cpu: ov-int8, onnx, int8, ")
    cpu("sapphirerapids")
    rows = {row["component"]: row for row in json.loads(CliRunner().invoke(main, ["doctor", "--json"]).output)}
    assert rows["CPU"]["detail"] == ("Intel(R) Xeon(R) Platinum 8488C; native: fp32, bf16 (avx512_bf16, amx_bf16), "
                                     "int8 dot product (avx512_vnni, avx_vnni, amx_int8)")
    assert rows["training precision"]["detail"].startswith("run.amp=auto on cpu: bf16 autocast (CPU has bf16")
    assert rows["inference auto"]["detail"].startswith("cpu: int8, ov-int8, onnx, ")


UNMEASURED = "expected, not measured (run `resnet-deploy bench` on the bundle to measure): "


def test_auto_never_runs_an_emulated_precision_unless_bench_measured_it_faster(cpu, tmp_path: Path) -> None:
    from test_runtime import _build_bundle  # the tiny bundle every runtime test uses

    bundle = _build_bundle(tmp_path / "bundle")
    cpu("zen2")  # no bf16, no int8 dot products
    p = Predictor.from_bundle(bundle)
    assert p.why == (f"{UNMEASURED}CPU lacks int8 dot-product instructions (avx512_vnni, avx_vnni, amx_int8, asimddp, "
                     "i8mm); int8 is expected slower than fp32 on onnxruntime")
    assert p.backend == ("ov-int8" if ov_installed() else "onnx")
    reasons = available_backends(bundle)
    if ov_installed():  # ov-bf16 is refused outright here, so neither auto nor bench ever runs it
        assert reasons["ov-bf16"].startswith("CPU lacks bf16 instructions (avx512_bf16, amx_bf16); bf16 would be")
    autotune.record_order(bundle, ["int8", "onnx"], p50_ms={"int8": 1.0, "onnx": 2.0})  # measured on this CPU
    p = Predictor.from_bundle(bundle)
    assert p.backend == "int8" and p.why.startswith("fastest measured on this machine by bench")
    cpu("cascadelake")  # another machine: the record is not its own, and int8 comes first by the static order
    p = Predictor.from_bundle(bundle)
    assert p.backend == "int8" and p.why == f"{UNMEASURED}CPU has int8 dot-product instructions (avx512_vnni)"


def test_a_measurement_is_never_reused_on_another_cpu_class(cpu, tmp_path: Path) -> None:
    """bench's record from the uncapped CPU is not used under ONEDNN_MAX_CPU_ISA=AVX2 (where int8 has no VNNI and
    bf16 is refused), nor the capped record without the cap; each class keeps its own."""
    from test_runtime import _build_bundle

    bundle = _build_bundle(tmp_path / "bundle")
    cpu("sapphirerapids")
    autotune.record_order(bundle, ["int8", "onnx"], p50_ms={"int8": 1.0, "onnx": 2.0})
    assert Predictor.from_bundle(bundle).backend == "int8"
    cpu("sapphirerapids", ONEDNN_MAX_CPU_ISA="AVX2")
    p = Predictor.from_bundle(bundle)
    assert p.backend == ("ov-int8" if ov_installed() else "onnx")
    assert p.why == (f"{UNMEASURED}ONEDNN_MAX_CPU_ISA=AVX2 hides the CPU's int8 dot-product instructions "
                     "(avx512_vnni, avx_vnni, amx_int8); int8 is expected slower than fp32 on onnxruntime")
    if ov_installed():
        assert available_backends(bundle)["ov-bf16"].startswith("ONEDNN_MAX_CPU_ISA=AVX2 hides the CPU's bf16")
    autotune.record_order(bundle, ["ov-fp32", "onnx", "int8"], p50_ms={"ov-fp32": 1.0, "onnx": 2.0, "int8": 3.0})
    assert predictor.auto_order("cpu", bundle)[0][:3] == ("ov-fp32", "onnx", "int8")
    cpu("sapphirerapids")
    assert predictor.auto_order("cpu", bundle)[0][:2] == ("int8", "onnx")
    records = json.loads((bundle / "reports" / "auto.json").read_text())["machines"]
    assert [r["machine"].get("isa_caps") for r in records] == [None, "ONEDNN_MAX_CPU_ISA=AVX2"]


def test_variants_bench_did_not_time_keep_the_expected_order(cpu, tmp_path: Path) -> None:
    """A record that times only some variants leaves the others in the expected order: on a CPU without int8 dot
    products, int8 stays behind fp32 unless measured ahead of it."""
    cpu("zen2")
    autotune.record_order(tmp_path, ["ov-fp32"], p50_ms={"ov-fp32": 1.0})
    order, why = predictor.auto_order("cpu", tmp_path)
    assert order[0] == "ov-fp32" and why.startswith("fastest measured on this machine by bench")
    assert order.index("onnx") < order.index("int8") and order.index("ov-int8") < order.index("onnx")


@pytest.mark.skipif(not ov_installed(), reason="openvino is not installed (the compile cache is OpenVINO's)")
def test_openvino_compile_cache_is_keyed_by_the_cpu_class(cpu, tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    from resnet_deploy.runtime import openvino_backend

    monkeypatch.setenv("RESNET_DEPLOY_CACHE", str(tmp_path / "cache"))
    names = {}
    for label, caps in (("native", {}), ("avx2", {"ONEDNN_MAX_CPU_ISA": "AVX2"}),
                        ("avx512 core", {"ONEDNN_MAX_CPU_ISA": "AVX512_CORE"})):
        cpu("sapphirerapids", **caps)
        entry = openvino_backend.cache_entry("sha256-" + "0" * 64, 2, "fp32")
        names[label] = (entry.name, json.loads(entry.binding))
        entry.folder.close()
    assert len({n for n, _ in names.values()}) == 3
    assert names["avx2"][1]["isa_caps"] == "ONEDNN_MAX_CPU_ISA=AVX2" and "isa_caps" not in names["native"][1]
    cpu("cascadelake")  # another CPU, no cap: another entry again
    entry = openvino_backend.cache_entry("sha256-" + "0" * 64, 2, "fp32")
    entry.folder.close()
    assert entry.name not in {n for n, _ in names.values()}


def test_doctor_shows_a_cap_and_the_capped_choices(cpu) -> None:
    cpu("sapphirerapids", ONEDNN_MAX_CPU_ISA="AVX2")
    rows = {row["component"]: row for row in json.loads(CliRunner().invoke(main, ["doctor", "--json"]).output)}
    assert rows["CPU"]["detail"] == ("Intel(R) Xeon(R) Platinum 8488C; native: fp32; emulated or slow: bf16, int8; "
                                     "instruction set capped (ONEDNN_MAX_CPU_ISA=AVX2): the libraries run as on an "
                                     "older CPU, and these are that CPU's")
    assert rows["training precision"]["detail"].startswith("run.amp=auto on cpu: fp32 (ONEDNN_MAX_CPU_ISA=AVX2 hides")
    assert rows["inference auto"]["detail"].startswith("cpu: ov-int8, onnx, int8, ")


def test_reports_name_the_cpus_precisions_and_any_instruction_set_cap(cpu, monkeypatch: pytest.MonkeyPatch) -> None:
    from resnet_deploy.validate.env import environment
    from resnet_deploy.validate.report import environment_markdown

    cpu("cascadelake")
    for k in ("ATEN_CPU_CAPABILITY", "ONEDNN_MAX_CPU_ISA", "DNNL_MAX_CPU_ISA", "OV_CPU_MAX_ISA",
              "MKL_ENABLE_INSTRUCTIONS"):
        monkeypatch.delenv(k, raising=False)
    e = environment(2)
    assert e["cpu_native"] == {"fp32": [], "int8": ["avx512_vnni"]} and e["isa_caps"] == {}
    text = environment_markdown(e)
    assert "CPU Intel(R) Xeon(R) Platinum 8259CL CPU @ 2.50GHz (" in text
    assert "; native fp32, int8 (avx512_vnni))" in text
    assert "capped" not in text
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX2")
    monkeypatch.setenv("OV_CPU_MAX_ISA", "AVX2")
    e = environment(2)
    assert e["isa_caps"] == {"ONEDNN_MAX_CPU_ISA": "AVX2", "OV_CPU_MAX_ISA": "AVX2"}
    assert ("**instruction set capped (ONEDNN_MAX_CPU_ISA=AVX2, OV_CPU_MAX_ISA=AVX2): an emulation of an older CPU**"
            in environment_markdown(e))
