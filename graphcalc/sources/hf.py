"""Models by their Hugging Face name or config: `hf:NAME`, a `config.json`, or a model folder.

Only the config is read, never a weight: `hf:NAME` from the local Hugging Face cache
(`$HF_HUB_CACHE`, else `$HF_HOME/hub`, else `~/.cache/huggingface/hub`, as huggingface_hub reads
them), from the hub only when the cache lacks it, the hub answers and `offline` is off. The model
is the task's `AutoModelFor*` class built from the config (`from_config`), on the meta device when
analysed; no code from the hub is run (`trust_remote_code` is never set).

The batch is made for the task, labels included, so the loss is the model's own
(`model(**inputs, labels=...).loss`, `own_loss`):

- causal-lm, masked-lm: `input_ids` (batch, seq), an all-ones `attention_mask`, `labels` = the ids
  (each position a target, as a causal LM's fine-tuning step has it; masked-lm's -100 on the
  unmasked positions would not change a shape).
- seq2seq: the same for the encoder, `labels` (batch, seq) for the decoder (transformers shifts
  them into the decoder's input). speech-seq2seq (Whisper): `input_features` (batch, mel bins,
  2 x max_source_positions frames, the 30 s window Whisper requires) and `labels` (batch, seq).
- seq-cls, token-cls: `labels` (batch,) or (batch, seq) of `num_labels` classes. A decoder without
  a `pad_token_id` (GPT-2, Llama) gets its `eos_token_id` (else 0), as fine-tuning recipes set it:
  transformers' sequence classifier needs one for a batch of more than one.
- image-cls, semantic-seg: `pixel_values` (batch, channels, size, size), size from the config's
  `image_size` (224 where it has none), `labels` (batch,) or (batch, size, size).
- ctc, audio-cls: `input_values` (batch, samples), 16,000 samples (1 s at 16 kHz, wav2vec2's rate)
  by default; ctc `labels` (batch, n) with n a quarter of the frames the feature encoder makes.

`use_cache` is turned off, as transformers' own training recipes do: a training step keeps no
generation cache. The tokens default to min(the config's max positions, 2048), 2048 where the
config gives none.
"""

from __future__ import annotations

import json
import os
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable
from urllib.parse import urlparse

import torch

from graphcalc.errors import ModelBuildError, ModelFileError, UsageError

PREFIX = "hf:"
# --task -> the transformers Auto class of its head
TASKS = {
    "causal-lm": "AutoModelForCausalLM",
    "masked-lm": "AutoModelForMaskedLM",
    "seq2seq": "AutoModelForSeq2SeqLM",
    "speech-seq2seq": "AutoModelForSpeechSeq2Seq",
    "seq-cls": "AutoModelForSequenceClassification",
    "token-cls": "AutoModelForTokenClassification",
    "image-cls": "AutoModelForImageClassification",
    "semantic-seg": "AutoModelForSemanticSegmentation",
    "ctc": "AutoModelForCTC",
    "audio-cls": "AutoModelForAudioClassification",
}
# the Auto classes' mappings (transformers.models.auto.modeling_auto), to say which heads exist
_MAPPINGS = {
    "causal-lm": "MODEL_FOR_CAUSAL_LM_MAPPING_NAMES",
    "masked-lm": "MODEL_FOR_MASKED_LM_MAPPING_NAMES",
    "seq2seq": "MODEL_FOR_SEQ_TO_SEQ_CAUSAL_LM_MAPPING_NAMES",
    "speech-seq2seq": "MODEL_FOR_SPEECH_SEQ_2_SEQ_MAPPING_NAMES",
    "seq-cls": "MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING_NAMES",
    "token-cls": "MODEL_FOR_TOKEN_CLASSIFICATION_MAPPING_NAMES",
    "image-cls": "MODEL_FOR_IMAGE_CLASSIFICATION_MAPPING_NAMES",
    "semantic-seg": "MODEL_FOR_SEMANTIC_SEGMENTATION_MAPPING_NAMES",
    "ctc": "MODEL_FOR_CTC_MAPPING_NAMES",
    "audio-cls": "MODEL_FOR_AUDIO_CLASSIFICATION_MAPPING_NAMES",
}
# --attn -> attn_implementation, as transformers calls them
ATTENTION = {"sdpa": "sdpa", "eager": "eager", "flash": "flash_attention_2"}
# Said outright: left unset, transformers asks on the terminal whether to run a repository's code
_NO_CODE = {"trust_remote_code": False}
MAX_DEFAULT_TOKENS = 2048
DEFAULT_IMAGE_SIZE = 224
DEFAULT_AUDIO_SAMPLES = 16000
_POSITIONS = ("max_position_embeddings", "n_positions", "max_sequence_length", "seq_length",
              "max_seq_len", "n_ctx", "max_target_positions")


@dataclass(frozen=True)
class HFOptions:
    """How a Hugging Face config becomes a model and a batch (None: the config's default)."""

    task: str | None = None
    seq_len: int | None = None
    image_size: int | None = None
    audio_samples: int | None = None
    attn: str | None = None
    offline: bool = False

    def __post_init__(self):
        if self.task is not None and self.task not in TASKS:
            raise UsageError(f"unknown task '{self.task}': choose one of {', '.join(TASKS)}")
        if self.attn is not None and self.attn not in ATTENTION:
            raise UsageError(f"unknown attention '{self.attn}': choose one of "
                             f"{', '.join(ATTENTION)}")
        if self.attn == "flash":
            raise UsageError("--attn flash (flash_attention_2) needs the flash-attn package on a "
                             "CUDA GPU and cannot run on the fake CPU tensors of the analysis: "
                             "use --attn sdpa, whose CUDA kernel is a flash attention")
        for name in ("seq_len", "image_size", "audio_samples"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise UsageError(f"--{name.replace('_', '-')} must be at least 1, got {value}")

    @property
    def is_default(self) -> bool:
        return self == HFOptions()


def is_hf_spec(spec: str) -> bool:
    """`hf:NAME`, a `.json` file or a folder: a model by its Hugging Face config."""
    if spec.startswith(PREFIX):
        return True
    path = Path(spec)
    return spec.lower().endswith(".json") or path.is_dir()


def _transformers():
    try:
        import transformers
    except ImportError:
        raise UsageError("a model by its Hugging Face name or config needs the transformers "
                         "package: pip install 'graphcalc[hf]'") from None
    return transformers


def hub_cache() -> Path:
    """Where huggingface_hub keeps its downloads, read from the environment at each call."""
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"]).expanduser()
    if os.environ.get("HF_HOME"):
        return Path(os.environ["HF_HOME"]).expanduser() / "hub"
    xdg = os.environ.get("XDG_CACHE_HOME") or os.path.join("~", ".cache")
    return Path(xdg).expanduser() / "huggingface" / "hub"


def _offline_env() -> bool:
    return any(os.environ.get(v, "").lower() in ("1", "true", "yes", "on")
               for v in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"))


def _hub_reachable(timeout: float = 3.0) -> bool:
    """One TCP connection to the hub (`$HF_ENDPOINT`), so that no network means one quick
    answer, not huggingface_hub's five retries."""
    url = urlparse(os.environ.get("HF_ENDPOINT") or "https://huggingface.co")
    try:
        with socket.create_connection((url.hostname, url.port or 443), timeout=timeout):
            return True
    except OSError:
        return False


def _first_line(e: Exception) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__


def read_config(spec: str, *, offline: bool = False):
    """The transformers config of `hf:NAME`, a config.json or a model folder; nothing else read."""
    transformers = _transformers()
    AutoConfig = transformers.AutoConfig
    if not spec.startswith(PREFIX):
        path = Path(spec)
        if path.is_dir() and not (path / "config.json").is_file():
            raise ModelFileError(f"{path} has no config.json: a model folder holds the "
                                 "config.json of a Hugging Face model")
        if not path.exists():
            raise ModelFileError(f"config not found: {path}")
        try:
            json.loads((path / "config.json" if path.is_dir() else path).read_text())
        except (ValueError, UnicodeDecodeError) as e:
            raise ModelFileError(f"{path} is not a JSON config: {e}") from None
        return _config_or_error(lambda: AutoConfig.from_pretrained(str(path), **_NO_CODE),
                                str(path))
    name = spec[len(PREFIX):]
    if not name:
        raise UsageError("hf: needs a model name, e.g. hf:openai-community/gpt2")
    # A hub id, never a path: transformers reads a folder of that name in the current
    # directory before the hub, and hf:NAME must not silently mean ./NAME.
    from huggingface_hub import hf_hub_download, try_to_load_from_cache
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    try:
        validate_repo_id(name)
    except HFValidationError:
        raise UsageError(f"{spec}: '{name}' is not a Hugging Face model name (ORG/NAME); "
                         "for a local folder or config.json give its path without hf:") from None
    cache = hub_cache()
    get = (f"`hf download {name} config.json`, or give the path of its "
           "config.json instead")
    cached = try_to_load_from_cache(name, "config.json", cache_dir=str(cache))
    if isinstance(cached, str):
        return _config_or_error(lambda: AutoConfig.from_pretrained(cached, **_NO_CODE), spec)
    if offline or _offline_env():
        why = "--offline" if offline else "HF_HUB_OFFLINE"
        raise ModelFileError(f"{spec}: no config.json of {name} in the Hugging Face cache at "
                             f"{cache}, and {why} forbids the hub: get it with {get}")
    if not _hub_reachable():
        raise ModelFileError(f"{spec}: no config.json of {name} in the Hugging Face cache at "
                             f"{cache}, and the hub cannot be reached: get it where there is a "
                             f"network with {get}")
    return _config_or_error(
        lambda: AutoConfig.from_pretrained(
            hf_hub_download(name, "config.json", cache_dir=str(cache)), **_NO_CODE), spec)


def _config_or_error(read: Callable[[], Any], where: str):
    try:
        from huggingface_hub.errors import StrictDataclassError
    except ImportError:  # an older huggingface_hub: configs are not validated field by field
        StrictDataclassError = ValueError  # noqa: N806
    try:
        return read()
    except StrictDataclassError as e:  # a field of the wrong type: the config's fault
        raise ModelFileError(f"{where}: the config is not valid for its model type: "
                             f"{' '.join(str(e).split())}") from None
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise _config_error(e, where) from None


def _config_error(e: Exception, where: str) -> ModelFileError:
    text = str(e)
    if "trust_remote_code" in text:
        return ModelFileError(f"{where}: the model needs its own code (its config's auto_map, "
                              "trust_remote_code), which graphcalc does not run")
    if "does not recognize this architecture" in text or "model type" in text:
        return ModelFileError(f"{where}: the installed transformers does not know this model "
                              f"type: {_first_line(e)}")
    if "model_type" in text:
        return ModelFileError(f"{where}: the config has no model_type, so no transformers model "
                              "can be built from it")
    return ModelFileError(f"{where}: the config could not be read: {_first_line(e)}")


def available_tasks(config) -> list[str]:
    from transformers.models.auto import modeling_auto

    model_type = config.model_type
    return [task for task, mapping in _MAPPINGS.items()
            if model_type in getattr(modeling_auto, mapping, {})]


def default_task(config) -> str:
    """Encoder-decoders: seq2seq (speech-seq2seq for speech); vision: image-cls; speech
    encoders: ctc; encoders (a masked-LM head): masked-lm; the rest: causal-lm."""
    tasks = available_tasks(config)
    if getattr(config, "is_encoder_decoder", False):
        for task in ("seq2seq", "speech-seq2seq"):
            if task in tasks:
                return task
    for task in ("causal-lm", "masked-lm", "image-cls", "ctc", "seq-cls"):
        if task not in tasks:
            continue
        if task == "causal-lm" and "masked-lm" in tasks:
            continue  # BERT and its kin have a causal head too; their pretraining is masked
        return task
    if tasks:
        return tasks[0]
    raise ModelBuildError(f"transformers has no head graphcalc knows for model type "
                          f"'{config.model_type}' (tasks: {', '.join(TASKS)})")


def max_positions(config) -> tuple[str, int] | None:
    text = config.get_text_config() if hasattr(config, "get_text_config") else config
    for attr in _POSITIONS:
        value = getattr(text, attr, None)
        if isinstance(value, int) and value > 0:
            return attr, value
    return None


def default_tokens(config) -> int:
    found = max_positions(config)
    return min(found[1], MAX_DEFAULT_TOKENS) if found else MAX_DEFAULT_TOKENS


def _image_size(config, asked: int | None) -> tuple[int, int]:
    if asked is not None:
        return asked, asked
    size = getattr(config, "image_size", None)
    if isinstance(size, int) and size > 0:
        return size, size
    if isinstance(size, (list, tuple)) and len(size) == 2:
        return int(size[0]), int(size[1])
    return DEFAULT_IMAGE_SIZE, DEFAULT_IMAGE_SIZE


def _audio_frames(config, samples: int) -> int:
    """Frames out of wav2vec2's feature encoder: each conv layer (k, s) maps L to (L - k) // s + 1
    (transformers' `_get_feat_extract_output_lengths`)."""
    length = samples
    for k, s in zip(getattr(config, "conv_kernel", ()), getattr(config, "conv_stride", ())):
        length = (length - k) // s + 1
    return length


@dataclass(frozen=True)
class Plan:
    """What will be built and fed: the task, its head's class and the batch's shapes."""

    task: str
    auto_class: str
    seq_len: int | None
    image_size: tuple[int, int] | None
    audio_samples: int | None
    attn: str | None
    # the config's largest position ("n_positions", 1024): a --seq-len past it fails where the
    # model has a learned position table, and runs where positions are rotary
    max_positions: tuple[str, int] | None = None

    def describe(self) -> str:
        if self.image_size is not None:
            return f"{self.task}, {self.image_size[0]}x{self.image_size[1]} images"
        if self.audio_samples is not None:
            return f"{self.task}, {self.audio_samples} audio samples"
        return f"{self.task}, {self.seq_len} tokens"


def plan(config, options: HFOptions) -> Plan:
    tasks = available_tasks(config)
    task = options.task or default_task(config)
    if task not in tasks:
        raise UsageError(f"model type '{config.model_type}' has no {task} head in transformers"
                         f" (its tasks: {', '.join(tasks) or 'none graphcalc knows'})")
    image = audio = seq = None
    if task in ("image-cls", "semantic-seg"):
        image = _image_size(config, options.image_size)
    elif task in ("ctc", "audio-cls"):
        audio = options.audio_samples or DEFAULT_AUDIO_SAMPLES
    else:
        seq = options.seq_len or default_tokens(config)
    return Plan(task, TASKS[task], seq, image, audio, options.attn, max_positions(config))


def make_inputs_for(config, p: Plan) -> Callable[[int], dict]:
    """The batch for the task, from tensor factories only (so it is made on fake tensors too)."""
    text = config.get_text_config() if hasattr(config, "get_text_config") else config
    vocab = getattr(text, "vocab_size", None) or 2
    classes = getattr(config, "num_labels", 2) or 2
    task, seq = p.task, p.seq_len

    def ids(batch, length):
        return torch.randint(0, vocab, (batch, length), dtype=torch.long)

    def make(batch: int) -> dict:
        if task in ("image-cls", "semantic-seg"):
            h, w = p.image_size
            channels = getattr(config, "num_channels", 3)
            labels = (torch.randint(0, classes, (batch,)) if task == "image-cls"
                      else torch.randint(0, classes, (batch, h, w)))
            return {"pixel_values": torch.randn(batch, channels, h, w), "labels": labels}
        if task in ("ctc", "audio-cls"):
            audio = torch.randn(batch, p.audio_samples)
            if task == "audio-cls":
                return {"input_values": audio, "labels": torch.randint(0, classes, (batch,))}
            n = max(1, _audio_frames(config, p.audio_samples) // 4)
            return {"input_values": audio, "labels": torch.randint(1, vocab, (batch, n))}
        if task == "speech-seq2seq":
            frames = 2 * getattr(config, "max_source_positions", 1500)
            return {"input_features": torch.randn(batch, config.num_mel_bins, frames),
                    "labels": ids(batch, seq)}
        tokens = ids(batch, seq)
        inputs = {"input_ids": tokens, "attention_mask": torch.ones(batch, seq, dtype=torch.long)}
        if task in ("causal-lm", "masked-lm"):
            inputs["labels"] = tokens
        elif task == "seq2seq":
            inputs["labels"] = ids(batch, seq)
        elif task == "seq-cls":
            inputs["labels"] = torch.randint(0, classes, (batch,))
        elif task == "token-cls":
            inputs["labels"] = torch.randint(0, classes, (batch, seq))
        return inputs

    return make


def own_loss(output, *args, **kwargs) -> torch.Tensor:
    """The model's own loss: transformers computes it from the labels in the batch."""
    loss = getattr(output, "loss", None)
    if not isinstance(loss, torch.Tensor):
        raise ModelBuildError(f"the model returned no loss for the labels given "
                              f"({type(output).__name__})")
    return loss


def prepare_config(config, p: Plan):
    """The config the model is built from: a copy, use_cache off, a pad token for seq-cls."""
    config = type(config).from_dict(config.to_dict())
    if getattr(config, "architectures", ()) is None:
        # transformers 5.24's Auto classes iterate it when a model type has several classes for a
        # task (DeiT's image-cls): none means the first, the one that trains on labels
        config.architectures = []
    if hasattr(config, "use_cache"):
        config.use_cache = False
    text = config.get_text_config() if hasattr(config, "get_text_config") else config
    if hasattr(text, "use_cache"):
        text.use_cache = False
    if p.task == "seq-cls" and getattr(config, "pad_token_id", None) is None:
        eos = getattr(config, "eos_token_id", None)
        config.pad_token_id = (eos[0] if isinstance(eos, (list, tuple)) and eos else
                               eos if isinstance(eos, int) else 0)
    return config


def builder(config, p: Plan) -> Callable[[], torch.nn.Module]:
    transformers = _transformers()
    auto = getattr(transformers, p.auto_class)
    kwargs: dict[str, Any] = {"dtype": torch.float32, **_NO_CODE}
    if p.attn is not None:
        kwargs["attn_implementation"] = ATTENTION[p.attn]

    def build():
        try:
            return auto.from_config(config, **kwargs)
        except ValueError as e:  # transformers' own sentence: an attention it lacks, a bad field
            raise ModelBuildError(f"transformers cannot build {p.auto_class} for "
                                  f"'{config.model_type}': {_first_line(e)}") from None

    return build


def load_source(spec: str, options: HFOptions) -> dict:
    """The fields of a `loader.ModelSource` for a model by its Hugging Face name or config
    (loader builds it: this module does not import loader, which imports this one)."""
    config = read_config(spec, offline=options.offline)
    p = plan(config, options)
    config = prepare_config(config, p)
    name = spec[len(PREFIX):] if spec.startswith(PREFIX) else str(spec)
    return dict(name=f"{name} ({p.describe()})", build=builder(config, p),
                example_inputs=make_inputs_for(config, p), loss=own_loss,
                path=Path(spec), meta_only=True, hf_plan=p)
