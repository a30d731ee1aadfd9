"""The GPUs people train on: memory, compute capability and what follows from it.

`memory_bytes` is what the CUDA driver gives a process: `torch.cuda.get_device_properties(i)
.total_memory` (cudaDeviceProp.totalGlobalMem, the `total` of cudaMemGetInfo), which is a little
less than nvidia-smi's "Total" on most data-centre cards (ECC and driver reservations: A10G
22587 MiB against 23028, L40S 45589 against 46068) and moves by a few MiB between driver versions
(T4: 15079-15109 MiB seen). Each entry says where its figure comes from; where several were
seen, the smallest is used. The caching allocator can never reserve more than this figure less
the CUDA context.

What follows from the compute capability (torch 2.x):
- native bf16: sm80 and later (`torch.cuda.is_bf16_supported(including_emulation=False)`);
  older cards emulate it where they run it at all.
- SDPA flash attention: sm80 and later (aten/src/ATen/native/transformers/cuda/sdp_utils.cpp,
  check_flash_attention_hardware_support: check_sm_version<sm80, sm121>, <sm80, sm90> in older
  releases); memory-efficient attention: sm50 and later (check_mem_efficient_hardware_support).
- the cuBLAS workspace torch allocates through the caching allocator for each handle and stream
  (aten/src/ATen/cuda/CublasHandlePool.cpp, `parseChosenWorkspaceSize`): 4096 KiB x 2 + 16 KiB
  x 8 = 8,519,680 B (":4096:2:16:8"), 32 MiB (4096 KiB x 8) on sm90 exactly; plus the cuBLASLt
  workspace, `CUBLASLT_WORKSPACE_SIZE` = 1024 KiB by default (`parseCUDABlasLtWorkspaceSize`).

The CUDA context (driver state and the kernels loaded into it) is outside the caching
allocator: nvidia-smi counts it, `memory_reserved` does not. With lazy module loading (torch's
default since 1.13, CUDA_MODULE_LOADING=LAZY) a process that made one tensor held 287,047,680 B
against 666,632,192 B loading every kernel eagerly (pytorch PR #86509); PyTorch's maintainers
quote "around 300 MB" and "around 400 MB" (pytorch issues #107667, #109888), more as a training
step loads cuBLAS/cuDNN kernels; nvidia-smi showed "from 200+mb to 700+mb" by machine (pytorch
issue #28113). Measured here (CONTEXT_SEEN): an H200 under driver 580 and CUDA 13.0 held
648,871,936 B right after CUDA started and 718,077,952 B after the first matmul (what the
driver reports used, less the caching allocator's reserved bytes; tests/data/h200/env.txt).

`cuda_context(spec)` gives the range for a card (its measurements where there are some, else
every figure above) and what the verdict assumes: the range's upper end, the conservative one.
Not measured yet: how much more a step that loads cuDNN's convolution kernels holds.
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass

from graphcalc.errors import UsageError

MiB = 2**20


@dataclass(frozen=True)
class ContextSeen:
    """A CUDA context measured on a real card: the driver's used bytes less the caching
    allocator's reserved ones, right after CUDA started and after the first matmul (which loads
    cuBLAS)."""

    gpu: str  # the GPUS key
    driver: str
    cuda: str
    torch: str
    after_start: int
    after_matmul: int
    source: str


CONTEXT_SEEN: tuple[ContextSeen, ...] = (
    ContextSeen("h200", "580.159.04", "13.0", "2.11.0+cu130",
                650_969_088 - 2_097_152, 753_729_536 - 35_651_584,
                "tests/data/h200/env.txt: 650,969,088 B used after CUDA started (2,097,152 of it "
                "reserved by the allocator), 753,729,536 B after a matmul (35,651,584 reserved)"),
)
# bytes, by GPU, driver and the kernels loaded: 287,047,680 B with lazy loading and one tensor
# (pytorch PR #86509) to "200+mb to 700+mb" across machines (pytorch issue #28113) and the
# measurements above
CUDA_CONTEXT_RANGE = (287_047_680,
                      max([700_000_000] + [c.after_matmul for c in CONTEXT_SEEN]))
CUDA_CONTEXT_BYTES = CUDA_CONTEXT_RANGE[1]  # what the verdict assumes for a card not measured


def cuda_context(spec: "GPU | None") -> tuple[int, tuple[int, int]]:
    """(bytes the verdict assumes, the range seen) of the CUDA context on `spec`: its own
    measurements where CONTEXT_SEEN has some, else every figure known; the assumption is the
    range's upper end."""
    seen = [c for c in CONTEXT_SEEN if spec is not None and c.gpu == spec.key]
    if not seen:
        return CUDA_CONTEXT_BYTES, CUDA_CONTEXT_RANGE
    low = min(c.after_start for c in seen)
    high = max(c.after_matmul for c in seen)
    return high, (low, high)


CUBLAS_WORKSPACE_DEFAULT = 4096 * 1024 * 2 + 16 * 1024 * 8  # ":4096:2:16:8" = 8,519,680 B
CUBLAS_WORKSPACE_SM90 = 4096 * 1024 * 8  # 32 MiB
CUBLASLT_WORKSPACE = 1024 * 1024  # CUBLASLT_WORKSPACE_SIZE default, 1024 KiB


@dataclass(frozen=True)
class GPU:
    key: str  # what to type: h100-sxm
    name: str  # what to print: H100 SXM 80GB
    memory_bytes: int  # what the driver gives a process (see the module docstring)
    memory_source: str
    compute_capability: tuple[int, int]
    aliases: tuple[str, ...] = ()  # other names, as typed or as nvidia-smi prints them
    nominal_gb: int = 0  # the marketed size, to tell variants apart (A100 40 or 80)

    @property
    def bf16(self) -> bool:
        return self.compute_capability >= (8, 0)

    @property
    def flash_attention(self) -> bool:
        return self.compute_capability >= (8, 0)

    @property
    def mem_efficient_attention(self) -> bool:
        return self.compute_capability >= (5, 0)

    @property
    def cublas_workspace_bytes(self) -> int:
        return CUBLAS_WORKSPACE_SM90 if self.compute_capability == (9, 0) \
            else CUBLAS_WORKSPACE_DEFAULT

    @property
    def cublaslt_workspace_bytes(self) -> int:
        return CUBLASLT_WORKSPACE

    @property
    def sm(self) -> str:
        return f"sm{self.compute_capability[0]}{self.compute_capability[1]}"


def _props(where: str, mib: int) -> str:
    return f"total_memory={mib}MB in torch.cuda.get_device_properties, {where}"


GPUS: tuple[GPU, ...] = (
    GPU("h100-sxm", "H100 SXM 80GB", 81082 * MiB,
        _props("'NVIDIA H100 80GB HBM3' (81082-81090 MB seen across drivers)", 81082), (9, 0),
        ("h100 sxm", "h100 sxm5", "h100 80gb", "h100 80gb hbm3", "h100 sxm 80gb"), 80),
    GPU("h100-pcie", "H100 PCIe 80GB", 81008 * MiB, _props("'NVIDIA H100 PCIe'", 81008), (9, 0),
        ("h100 pcie", "h100 pcie 80gb"), 80),
    GPU("h200", "H200 141GB", 143156 * MiB, _props("'NVIDIA H200'", 143156), (9, 0),
        ("h200", "h200 sxm", "h200 141gb", "h200 sxm 141gb"), 141),
    GPU("a100-80gb", "A100 80GB", 81049 * MiB,
        "Total global mem: 81049 MB for 'NVIDIA A100 80GB PCIe' (mixbench issue #47); the "
        "SXM4 card has the same HBM2e (81920 MiB in nvidia-smi, as the PCIe)", (8, 0),
        ("a100 80gb", "a100 sxm4 80gb", "a100 80gb pcie", "a100 pcie 80gb", "a100 sxm 80gb"), 80),
    GPU("a100-40gb", "A100 40GB", 42_298_834_944,
        "deviceQuery: 'NVIDIA A100-SXM4-40GB', 42298834944 bytes (bottlerocket PR #3873); "
        "40536 MB reported under another driver", (8, 0),
        ("a100 40gb", "a100 sxm4 40gb", "a100 pcie 40gb", "a100 40gb pcie", "a100 sxm 40gb"), 40),
    GPU("l40s", "L40S 48GB", 45589 * MiB, _props("'NVIDIA L40S'", 45589), (8, 9),
        ("l40s", "l40s 48gb"), 48),
    GPU("a6000", "RTX A6000 48GB", 48676 * MiB, _props("'NVIDIA RTX A6000'", 48676), (8, 6),
        ("rtx a6000", "a6000"), 48),
    GPU("l4", "L4 24GB", 23034 * MiB,
        "nvidia-smi's total, 23034MiB for 'NVIDIA L4' (no driver figure found: the process "
        "may see up to ~0.5 GiB less, as on the L40S)", (8, 9), ("l4", "l4 24gb"), 24),
    GPU("a10g", "A10G 24GB", 22587 * MiB, _props("'NVIDIA A10G'", 22587), (8, 6),
        ("a10g", "a10g 24gb"), 24),
    GPU("rtx4090", "RTX 4090 24GB", 24563 * MiB, _props("'NVIDIA GeForce RTX 4090'", 24563),
        (8, 9), ("rtx 4090", "4090", "geforce rtx 4090"), 24),
    GPU("rtx3090", "RTX 3090 24GB", 24259 * MiB,
        _props("'NVIDIA GeForce RTX 3090' (24268 MB under older drivers)", 24259), (8, 6),
        ("rtx 3090", "3090", "geforce rtx 3090"), 24),
    GPU("t4", "T4 16GB", 15079 * MiB,
        _props("'Tesla T4' (15079-15109 MB seen across drivers, Colab's 15109)", 15079), (7, 5),
        ("t4", "tesla t4", "t4 16gb"), 16),
    GPU("v100-16gb", "V100 16GB", 16160 * MiB,
        _props("'Tesla V100-SXM2-16GB', as nvidia-smi's 16160MiB", 16160), (7, 0),
        ("v100 16gb", "v100 sxm2 16gb", "v100 pcie 16gb", "tesla v100 sxm2 16gb"), 16),
    GPU("v100-32gb", "V100 32GB", 32510 * MiB,
        "nvidia-smi's total, 32510MiB for 'Tesla V100-SXM2-32GB' (on the 16 GB V100 the driver "
        "figure equals nvidia-smi's)", (7, 0),
        ("v100 32gb", "v100 sxm2 32gb", "v100 pcie 32gb", "v100s", "tesla v100 sxm2 32gb"), 32),
)

# Names that match several cards of the same memory take the common one (H100: the SXM card of
# the cloud instances); names whose cards differ in memory (A100, V100) are refused.
DEFAULT_OF = {"h100": "h100-sxm"}
_VENDOR = re.compile(r"\b(nvidia|geforce|tesla|quadro)\b")


def _compact(name: str) -> str:
    return re.sub(r"[^a-z0-9]", "", _VENDOR.sub(" ", name.lower()))


_INDEX: dict[str, GPU] = {}
for _g in GPUS:
    for _n in (_g.key, _g.name, *_g.aliases):
        _INDEX.setdefault(_compact(_n), _g)


@dataclass(frozen=True)
class Resolved:
    gpu: GPU
    note: str | None = None  # how an ambiguous name was read


def find_gpu(name: str) -> Resolved:
    """The GPU a name means, matched loosely: `A100-80GB`, `a100_80gb`, `NVIDIA A100-SXM4-80GB`,
    `h100`, `RTX 4090`, `NVIDIA GeForce RTX 4090`, `4090`. An unknown or ambiguous name raises
    UsageError with the choices."""
    q = _compact(str(name))
    if not q:
        raise UsageError(f"GPU name '{name}' is empty: choose one of {choices()}")
    if q in _INDEX:
        return Resolved(_INDEX[q])
    # nvidia-smi's long names carry the memory type or form factor after the size
    # ('A100-SXM4-80GB', 'H100 80GB HBM3'): a known name that the query starts with.
    longest = max((k for k in _INDEX if q.startswith(k) and len(k) >= 4), key=len, default=None)
    candidates = {g.key: g for k, g in _INDEX.items() if k.startswith(q)}
    if longest is not None and not candidates:
        g = _INDEX[longest]
        return Resolved(g, f"'{name}' read as the {g.name}")
    if len(candidates) == 1:
        g = next(iter(candidates.values()))
        return Resolved(g, f"'{name}' read as the {g.name}")
    if candidates:
        if q in DEFAULT_OF and len({g.nominal_gb for g in candidates.values()}) == 1:
            g = next(c for c in GPUS if c.key == DEFAULT_OF[q])
            others = ", ".join(c.key for c in candidates.values() if c is not g)
            return Resolved(g, f"'{name}' taken as the {g.name} (for the other, --gpu {others})")
        listed = ", ".join(f"{g.key} ({g.name})" for g in candidates.values())
        raise UsageError(f"GPU '{name}' could be several cards: choose one of {listed}")
    close = difflib.get_close_matches(q, list(_INDEX), n=3, cutoff=0.5)
    near = list(dict.fromkeys(_INDEX[c].key for c in close))
    hint = f"did you mean {' or '.join(near)}?" if near else f"choose one of {choices()}"
    raise UsageError(f"unknown GPU '{name}': {hint} For another card give its memory with "
                     "--memory SIZE")


def choices() -> str:
    return ", ".join(g.key for g in GPUS)
