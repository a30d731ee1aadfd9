"""Models by their Hugging Face name or config (graphcalc.sources.hf): `hf:NAME` from a local cache,
a config.json, a model folder. Every config is written here (no network: HF_HUB_OFFLINE is set,
and `hf:NAME` resolves in a fake cache under tmp_path); the models are built from it with random
weights only where a real step is compared."""

from __future__ import annotations

import json
import os
import resource
import sys
import time

import pytest
import torch

pytest.importorskip("transformers")

from typer.testing import CliRunner  # noqa: E402

from graphcalc.sources import loader  # noqa: E402
from graphcalc.commands.analyze import analyze_file  # noqa: E402
from graphcalc.errors import GraphcalcError, ModelFileError, UsageError  # noqa: E402
from graphcalc.sources.hf import HFOptions, hub_cache  # noqa: E402
from graphcalc.options import Options  # noqa: E402
from graphcalc.report import TRACER  # noqa: E402
from graphcalc.commands.verify import verify  # noqa: E402
from graphcalc_cli.app import app  # noqa: E402

from conftest import unique_param_count  # noqa: E402


@pytest.fixture(autouse=True)
def _offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TRANSFORMERS_VERBOSITY", "error")


_DECODER = dict(vocab_size=500, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128)
_ENCODER = dict(vocab_size=500, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                intermediate_size=128, max_position_embeddings=128)
_NO_KV = {k: v for k, v in _DECODER.items() if k != "num_key_value_heads"}

# model_type -> (small config, the task chosen by default)
ARCHITECTURES = {
    "llama": (_DECODER, "causal-lm"),
    "mistral": (_DECODER, "causal-lm"),
    "qwen2": (_DECODER, "causal-lm"),
    "qwen2_moe": (dict(_DECODER, moe_intermediate_size=32, shared_expert_intermediate_size=64,
                       num_experts=4, num_experts_per_tok=2), "causal-lm"),
    "mixtral": (dict(_DECODER, num_local_experts=4, num_experts_per_tok=2), "causal-lm"),
    "phi3": (dict(_DECODER, pad_token_id=0, eos_token_id=2, bos_token_id=1), "causal-lm"),
    "gemma": (dict(_DECODER, head_dim=16), "causal-lm"),
    "gpt2": (dict(vocab_size=500, n_positions=128, n_embd=64, n_layer=2, n_head=4,
                  bos_token_id=1, eos_token_id=2), "causal-lm"),
    "gpt_neox": (_NO_KV, "causal-lm"),
    "falcon": (dict(vocab_size=500, hidden_size=64, num_hidden_layers=2, num_attention_heads=4),
               "causal-lm"),
    "opt": (dict(vocab_size=500, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                 ffn_dim=128, word_embed_proj_dim=64, max_position_embeddings=128), "causal-lm"),
    "bloom": (dict(vocab_size=500, hidden_size=64, n_layer=2, n_head=4), "causal-lm"),
    "bert": (_ENCODER, "masked-lm"),
    "roberta": (dict(_ENCODER, max_position_embeddings=130), "masked-lm"),
    "distilbert": (dict(vocab_size=500, dim=64, n_layers=2, n_heads=4, hidden_dim=128,
                        max_position_embeddings=128), "masked-lm"),
    "albert": (dict(_ENCODER, embedding_size=32), "masked-lm"),
    "deberta-v2": (_ENCODER, "masked-lm"),
    "electra": (dict(_ENCODER, embedding_size=32), "masked-lm"),
    "t5": (dict(vocab_size=500, d_model=64, d_kv=16, d_ff=128, num_layers=2,
                num_decoder_layers=2, num_heads=4, decoder_start_token_id=0, pad_token_id=0),
           "seq2seq"),
    "bart": (dict(vocab_size=500, d_model=64, encoder_layers=2, decoder_layers=2,
                  encoder_attention_heads=4, decoder_attention_heads=4, encoder_ffn_dim=128,
                  decoder_ffn_dim=128, max_position_embeddings=128), "seq2seq"),
    "whisper": (dict(vocab_size=500, d_model=64, encoder_layers=2, decoder_layers=2,
                     encoder_attention_heads=4, decoder_attention_heads=4, encoder_ffn_dim=128,
                     decoder_ffn_dim=128, num_mel_bins=16, max_source_positions=32,
                     max_target_positions=64, pad_token_id=0, decoder_start_token_id=1,
                     eos_token_id=2, bos_token_id=1), "speech-seq2seq"),
    "vit": (dict(image_size=32, patch_size=8, hidden_size=64, num_hidden_layers=2,
                 num_attention_heads=4, intermediate_size=128, num_labels=3), "image-cls"),
    "deit": (dict(image_size=32, patch_size=8, hidden_size=64, num_hidden_layers=2,
                  num_attention_heads=4, intermediate_size=128, num_labels=3), "image-cls"),
    "swin": (dict(image_size=32, patch_size=4, embed_dim=16, depths=[1, 1], num_heads=[2, 2],
                  window_size=4, num_labels=3), "image-cls"),
    "convnext": (dict(image_size=32, hidden_sizes=[16, 32, 64, 128], depths=[1, 1, 1, 1],
                      num_labels=3), "image-cls"),
    "segformer": (dict(image_size=32, num_encoder_blocks=2, depths=[1, 1], sr_ratios=[2, 1],
                       hidden_sizes=[16, 32], num_attention_heads=[1, 2], decoder_hidden_size=32,
                       num_labels=3, patch_sizes=[7, 3], strides=[4, 2]), "image-cls"),
    "wav2vec2": (dict(vocab_size=12, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                      intermediate_size=64, conv_dim=[16, 16], conv_stride=[5, 2],
                      conv_kernel=[10, 3], num_conv_pos_embeddings=8,
                      num_conv_pos_embedding_groups=2, pad_token_id=0, layerdrop=0.0,
                      mask_time_prob=0.0), "ctc"),
}
# The quick loop keeps a decoder, an encoder, a vision and a speech model; `make test` runs all 28.
QUICK = {"llama", "bert", "vit", "wav2vec2"}
SMALL = HFOptions(seq_len=32, audio_samples=1600)


def write_config(folder, model_type: str, **extra) -> str:
    folder.mkdir(parents=True, exist_ok=True)
    config = dict(ARCHITECTURES[model_type][0], model_type=model_type, **extra)
    (folder / "config.json").write_text(json.dumps(config))
    return str(folder / "config.json")


def real_model(spec: str, options: HFOptions = SMALL):
    source = loader.load(spec, options)
    torch.manual_seed(0)
    return loader.build_model(source, device=None)


@pytest.mark.parametrize("model_type", [
    pytest.param(t, marks=() if t in QUICK else pytest.mark.slow) for t in ARCHITECTURES])
def test_every_architecture_analyses_from_its_config(tmp_path, model_type):
    """At least 25 architectures of the installed transformers, from a config.json alone: the
    default task's head, every parameter counted (against the real model's), every op costed,
    on the primary tracer, built on meta."""
    spec = write_config(tmp_path, model_type)
    source = loader.load(spec, SMALL)
    assert source.hf_plan.task == ARCHITECTURES[model_type][1]
    meta = loader.build_model(source, device="meta")
    assert {p.device.type for p in meta.parameters()} == {"meta"}
    report = analyze_file(spec, Options(batch=2), hf=SMALL)
    assert report.totals.params == unique_param_count(real_model(spec))
    assert report.complete, report.incomplete_reasons
    assert report.tracer == TRACER and not report.opaque
    assert ARCHITECTURES[model_type][1] in report.model
    # parameters + gradients + Adam's two moments at least: 16 B a parameter
    assert report.memory.peak_bytes > 16 * report.totals.params


def test_at_least_25_architectures_of_each_kind():
    tasks = [task for _, task in ARCHITECTURES.values()]
    assert len(ARCHITECTURES) >= 25
    assert {"causal-lm", "masked-lm", "seq2seq", "speech-seq2seq", "image-cls",
            "ctc"} <= set(tasks)
    assert {"mixtral", "qwen2_moe"} <= set(ARCHITECTURES)  # mixtures of experts


# A real CPU step, random weights from the same config: predicted peak byte for byte.
COMPARED = [("gpt2", None), ("llama", None), ("bert", "token-cls"), ("t5", None),
            ("vit", None), ("wav2vec2", None), ("gpt2", "seq-cls"), ("mixtral", None)]


@pytest.mark.parametrize("model_type,task", [
    pytest.param(t, k, marks=() if (t, k) == ("gpt2", None) else pytest.mark.slow)
    for t, k in COMPARED])
def test_peak_equals_a_real_step_byte_for_byte(tmp_path, model_type, task):
    spec = write_config(tmp_path, model_type)
    options = HFOptions(task=task, seq_len=32, audio_samples=1600)
    source = loader.load(spec, options)
    result = verify(source, Options(batch=2, steps=2), source.example_inputs)
    checks = {c.figure: c for c in result.checks}
    assert checks["peak memory"].predicted == checks["peak memory"].measured
    assert checks["parameters"].predicted == checks["parameters"].measured
    if model_type == "mixtral":
        # FlopCounterMode has no formula for aten::_grouped_mm, transformers' expert products:
        # it counts them 0; tests/test_architectures.py checks graphcalc's count by hand
        assert checks["FLOPs forward"].predicted > checks["FLOPs forward"].measured
        return
    assert checks["FLOPs forward"].predicted == checks["FLOPs forward"].measured
    assert checks["FLOPs backward"].predicted == checks["FLOPs backward"].measured


@pytest.mark.slow
def test_eager_attention_keeps_the_attention_matrix_sdpa_does_not(tmp_path):
    """--attn eager materialises softmax(QK^T) (batch x heads x seq x seq) and keeps it for
    backward; sdpa's CPU kernel does not. Both byte-exact against real steps."""
    spec = write_config(tmp_path, "llama")
    peaks = {}
    for attn in ("sdpa", "eager"):
        source = loader.load(spec, HFOptions(seq_len=64, attn=attn))
        result = verify(source, Options(batch=2, steps=2), source.example_inputs)
        assert result.checks[0].predicted == result.checks[0].measured
        peaks[attn] = result.checks[0].predicted
    # at least one fp32 attention matrix per layer more: 2 x 4 heads x 64 x 64 x 4 B x 2 layers
    assert peaks["eager"] - peaks["sdpa"] >= 2 * 4 * 64 * 64 * 4 * 2


def test_tasks_build_their_heads_and_labels(tmp_path):
    spec = write_config(tmp_path / "gpt2", "gpt2")
    source = loader.load(spec, HFOptions(task="seq-cls", seq_len=16))
    batch = source.example_inputs(3)
    assert batch["labels"].shape == (3,) and batch["input_ids"].shape == (3, 16)
    assert type(loader.build_model(source)).__name__ == "GPT2ForSequenceClassification"
    # a decoder with no pad token gets its eos as one: transformers needs it past batch 1
    assert analyze_file(spec, Options(batch=3), hf=HFOptions(task="seq-cls", seq_len=16)) \
        .totals.params == unique_param_count(real_model(spec, HFOptions(task="seq-cls")))
    seg = write_config(tmp_path / "seg", "segformer")
    batch = loader.load(seg, HFOptions(task="semantic-seg")).example_inputs(2)
    assert batch["pixel_values"].shape == (2, 3, 32, 32) and batch["labels"].shape == (2, 32, 32)
    wav = write_config(tmp_path / "wav", "wav2vec2")
    batch = loader.load(wav, HFOptions(audio_samples=1600)).example_inputs(2)
    # frames: (1600 - 10) // 5 + 1 = 319, then (319 - 3) // 2 + 1 = 159; labels a quarter: 39
    assert batch["input_values"].shape == (2, 1600) and batch["labels"].shape == (2, 39)
    whisper = write_config(tmp_path / "whisper", "whisper")
    batch = loader.load(whisper, HFOptions()).example_inputs(2)
    # 2 x max_source_positions frames (Whisper requires them); labels max_target_positions long
    assert batch["input_features"].shape == (2, 16, 64) and batch["labels"].shape == (2, 64)


def test_default_lengths_come_from_the_config(tmp_path):
    assert loader.load(write_config(tmp_path / "a", "gpt2"), HFOptions()).hf_plan.seq_len == 128
    big = write_config(tmp_path / "b", "llama", max_position_embeddings=8192)
    assert loader.load(big, HFOptions()).hf_plan.seq_len == 2048
    vit = loader.load(write_config(tmp_path / "c", "vit", image_size=48), HFOptions())
    assert vit.hf_plan.image_size == (48, 48)
    vit = loader.load(write_config(tmp_path / "c", "vit"), HFOptions(image_size=64))
    assert vit.example_inputs(1)["pixel_values"].shape == (1, 3, 64, 64)


def _fake_cache(root, repo: str, config: dict) -> None:
    """huggingface_hub's cache layout: models--ORG--NAME/{refs/main, snapshots/HASH/...}."""
    commit = "0123456789abcdef0123456789abcdef01234567"
    folder = root / ("models--" + repo.replace("/", "--"))
    (folder / "refs").mkdir(parents=True)
    (folder / "refs" / "main").write_text(commit)
    (folder / "snapshots" / commit).mkdir(parents=True)
    (folder / "snapshots" / commit / "config.json").write_text(json.dumps(config))


def test_hf_name_reads_the_local_cache(tmp_path, monkeypatch):
    config = dict(ARCHITECTURES["gpt2"][0], model_type="gpt2")
    _fake_cache(tmp_path / "home" / "hub", "tiny-org/tiny-gpt2", config)
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "home"))
    assert hub_cache() == tmp_path / "home" / "hub"
    report = analyze_file("hf:tiny-org/tiny-gpt2", Options(batch=2),
                          hf=HFOptions(seq_len=16, offline=True))
    assert report.model == "tiny-org/tiny-gpt2 (causal-lm, 16 tokens)"
    folder = tmp_path / "folder"
    write_config(folder, "gpt2")
    same = analyze_file(str(folder), Options(batch=2), hf=HFOptions(seq_len=16))
    assert same.memory.peak_bytes == report.memory.peak_bytes
    # HF_HUB_CACHE wins over HF_HOME, as in huggingface_hub
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "elsewhere"))
    with pytest.raises(ModelFileError, match="elsewhere"):
        loader.load("hf:tiny-org/tiny-gpt2", HFOptions(offline=True))


def test_not_in_the_cache_offline_says_where_it_looked_and_how_to_get_it(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    start = time.perf_counter()
    with pytest.raises(ModelFileError) as e:
        loader.load("hf:some-org/missing", HFOptions(offline=True))
    assert str(tmp_path) in str(e.value) and "--offline" in str(e.value)
    assert "hf download some-org/missing config.json" in str(e.value)
    with pytest.raises(ModelFileError, match="HF_HUB_OFFLINE forbids the hub"):
        loader.load("hf:some-org/missing", HFOptions())
    assert time.perf_counter() - start < 5  # no retries against a network that is not there


@pytest.mark.parametrize("options,match", [
    (HFOptions(task="image-cls"), "'gpt2' has no image-cls head"),
    (HFOptions(attn="eager", task="causal-lm"), None),
])
def test_task_must_exist_for_the_model(tmp_path, options, match):
    spec = write_config(tmp_path, "gpt2")
    if match is None:
        assert loader.load(spec, options).hf_plan.attn == "eager"
        return
    with pytest.raises(UsageError, match=match):
        loader.load(spec, options)


def test_bad_options_and_configs_are_one_sentence(tmp_path):
    with pytest.raises(UsageError, match=r"\(flash_attention_2\) needs the flash-attn package"):
        HFOptions(attn="flash")
    with pytest.raises(UsageError, match="unknown task 'lm'"):
        HFOptions(task="lm")
    with pytest.raises(UsageError, match="--seq-len must be at least 1"):
        HFOptions(seq_len=0)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelFileError, match="has no config.json"):
        loader.load(str(tmp_path / "empty"))
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(ModelFileError, match="is not a JSON config"):
        loader.load(str(tmp_path / "bad.json"))
    (tmp_path / "unknown.json").write_text(json.dumps({"model_type": "no-such-model"}))
    with pytest.raises(ModelFileError, match="does not know this model type"):
        loader.load(str(tmp_path / "unknown.json"))
    (tmp_path / "untyped.json").write_text(json.dumps({"hidden_size": 8}))
    with pytest.raises(ModelFileError, match="has no model_type"):
        loader.load(str(tmp_path / "untyped.json"))
    (tmp_path / "code.json").write_text(json.dumps({
        "model_type": "custom-thing", "auto_map": {"AutoConfig": "configuration_x.XConfig"}}))
    with pytest.raises(ModelFileError, match=r"needs its own code .* graphcalc does not run"):
        loader.load(str(tmp_path / "code.json"))  # refused, not asked on the terminal
    with pytest.raises(ModelFileError, match="config not found"):
        loader.load(str(tmp_path / "nowhere.json"))
    spec = write_config(tmp_path / "g", "gpt2")
    with pytest.raises(UsageError, match="--input does not apply"):
        analyze_file(spec, Options(), inputs=["3x4"])
    sample = str(__import__("conftest").SAMPLES / "seed_cnn.py")
    with pytest.raises(UsageError, match="not to a model file"):
        loader.load(sample, HFOptions(task="seq-cls"))


def test_without_transformers_one_sentence(tmp_path, monkeypatch):
    spec = write_config(tmp_path, "gpt2")
    monkeypatch.setitem(sys.modules, "transformers", None)  # import transformers -> ImportError
    with pytest.raises(UsageError, match=r"needs the transformers package: pip install "
                                         r"'graphcalc\[hf\]'"):
        loader.load(spec)


runner = CliRunner()


def test_cli_analyze_fit_and_errors(tmp_path):
    folder = tmp_path / "tiny"
    write_config(folder, "gpt2")
    result = runner.invoke(app, ["analyze", str(folder), "--batch", "2", "--seq-len", "16",
                                 "--format", "json"])
    assert result.exit_code == 0, result.output
    d = json.loads(result.stdout)
    assert d["model"].endswith("(causal-lm, 16 tokens)")
    assert d["memory"]["peak_bytes"] == analyze_file(
        str(folder), Options(batch=2), hf=HFOptions(seq_len=16)).memory.peak_bytes
    result = runner.invoke(app, ["render", str(folder), "--seq-len", "16", "--depth", "1",
                                 "--format", "dot"])
    assert result.exit_code == 0 and "GPT2LMHeadModel" in result.stdout, result.output
    for args, sentence in ((["--attn", "flash"], "flash_attention_2"),
                           (["--task", "ctc"], "has no ctc head")):
        result = runner.invoke(app, ["analyze", str(folder), *args])
        assert result.exit_code == 2 and sentence in result.output, result.output
        assert "Traceback" not in result.output
    result = runner.invoke(app, ["analyze", "hf:nobody/nothing", "--offline"])
    assert result.exit_code == 2 and "hf download" in result.output


@pytest.mark.slow
def test_cli_fit_and_verify_a_config(tmp_path):
    folder = tmp_path / "tiny"
    write_config(folder, "gpt2")
    result = runner.invoke(app, ["fit", str(folder / "config.json"), "--memory", "20MiB",
                                 "--device", "cpu", "--seq-len", "16"])
    assert result.exit_code == 0 and "Largest batch" in result.output, result.output
    batch = int(result.output.split("20.0 MiB: ")[1].split()[0])
    peak = analyze_file(str(folder), Options(batch=batch), hf=HFOptions(seq_len=16))
    over = analyze_file(str(folder), Options(batch=batch + 1), hf=HFOptions(seq_len=16))
    assert peak.memory.peak_bytes <= 20 * 2**20 < over.memory.peak_bytes
    result = runner.invoke(app, ["verify", str(folder), "--seq-len", "16", "--batch", "2",
                                 "--steps", "2", "--tolerance", "0"])
    assert result.exit_code == 0 and "+0.00%" in result.output, result.output


@pytest.mark.slow
def test_an_8b_config_analyses_on_meta_without_its_weights(tmp_path):
    """Llama-3-8B's config.json (its published fields): 8,030,261,248 parameters, 32 GB in fp32,
    analysed with no weight allocated (built on meta): the process grows by well under 4 GB, in
    about half a minute on two shared cores."""
    config = {"architectures": ["LlamaForCausalLM"], "attention_bias": False,
              "bos_token_id": 128000, "eos_token_id": 128001, "hidden_act": "silu",
              "hidden_size": 4096, "intermediate_size": 14336, "max_position_embeddings": 8192,
              "model_type": "llama", "num_attention_heads": 32, "num_hidden_layers": 32,
              "num_key_value_heads": 8, "rms_norm_eps": 1e-05, "rope_theta": 500000.0,
              "tie_word_embeddings": False, "torch_dtype": "bfloat16", "vocab_size": 128256}
    (tmp_path / "config.json").write_text(json.dumps(config))
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    start = time.perf_counter()
    report = analyze_file(str(tmp_path), Options(batch=8, optimizer="adamw", amp="bf16"),
                          hf=HFOptions())
    assert time.perf_counter() - start < 180
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - before < 4 * 2**30
    assert report.totals.params == 8_030_261_248
    assert "(causal-lm, 2048 tokens)" in report.model
    # fp32 master weights (32.1 GB) and AdamW's two moments (64.2 GB) at least
    assert report.memory.peak_bytes > 12 * report.totals.params


@pytest.mark.slow
def test_analysis_and_fit_build_only_on_meta(tmp_path, monkeypatch):
    """No weight is allocated by analyze or fit: every build is on the meta device, and a failed
    analysis is not retried on a model built for real, as a model file's is (loader.meta_only)."""
    from graphcalc.commands import analyze as analyze_step
    from graphcalc.commands.verify import fit_source

    spec = write_config(tmp_path, "gpt2")
    devices = []
    build = loader.build_model

    def recording(source, device="meta"):
        devices.append(device)
        return build(source, device=device)

    monkeypatch.setattr(loader, "build_model", recording)
    analyze_file(spec, Options(batch=2), hf=HFOptions(seq_len=8))
    source = loader.load(spec, HFOptions(seq_len=8))
    fit_source(source, source.example_inputs, Options(), 4 * 2**20)
    assert devices and set(devices) == {"meta"}

    def fails(*args, **kwargs):
        raise analyze_step.ShapeError("made to fail")

    monkeypatch.setattr(analyze_step, "analyze_module", fails)
    with pytest.raises(analyze_step.ShapeError):
        analyze_file(spec, Options(batch=2), hf=HFOptions(seq_len=8))
    assert set(devices) == {"meta"}


def test_a_folder_named_like_the_hub_id_does_not_replace_it(tmp_path, monkeypatch):
    """`hf:NAME` is a hub id: a folder ./ORG/NAME in the current directory is not read for it
    (transformers' from_pretrained would read the folder first)."""
    config = dict(ARCHITECTURES["gpt2"][0], model_type="gpt2")
    _fake_cache(tmp_path / "hub", "tiny-org/tiny-gpt2", config)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.chdir(tmp_path)
    (tmp_path / "tiny-org" / "tiny-gpt2").mkdir(parents=True)
    (tmp_path / "tiny-org" / "tiny-gpt2" / "config.json").write_text(json.dumps(
        dict(config, n_layer=config.get("n_layer", 2) + 3)))
    from_hub = analyze_file("hf:tiny-org/tiny-gpt2", Options(batch=2),
                            hf=HFOptions(seq_len=16, offline=True))
    from_folder = analyze_file("tiny-org/tiny-gpt2", Options(batch=2), hf=HFOptions(seq_len=16))
    assert from_hub.totals.params < from_folder.totals.params
    assert from_hub.totals.params == analyze_file(
        str(write_config(tmp_path / "cfg", "gpt2")), Options(batch=2),
        hf=HFOptions(seq_len=16)).totals.params
    with pytest.raises(UsageError, match="not a Hugging Face model name"):
        loader.load("hf:./tiny-org/tiny-gpt2", HFOptions(offline=True))


@pytest.mark.parametrize("field, value", [("n_layer", "two"), ("n_head", 2.5)])
def test_a_config_field_of_the_wrong_type_is_the_configs_fault(field, value, tmp_path):
    config = dict(ARCHITECTURES["gpt2"][0], model_type="gpt2", **{field: value})
    (tmp_path / "config.json").write_text(json.dumps(config))
    result = runner.invoke(app, ["analyze", str(tmp_path / "config.json"), "--seq-len", "8"])
    assert result.exit_code == 2, result.output
    assert f"field '{field}'" in result.output and "internal error" not in result.output
    assert "Traceback" not in result.output
