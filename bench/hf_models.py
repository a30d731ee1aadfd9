"""Small Hugging Face `transformers` models built from config objects, with random weights.

Nothing is downloaded: every model comes from a config constructed here (no `from_pretrained`),
and HF_HUB_OFFLINE is set before `transformers` is imported.

Each builder returns (name, model, make_inputs, loss_fn). `make_inputs(batch)` uses only tensor
factories (torch.randint / torch.randn / torch.ones), so graphcalc can call it under
FakeTensorMode as well as for real. Language models take `labels=` in their input dict, so
`output.loss` exists and `loss_fn` is None (graphcalc's default loss then uses it). Image
classifiers also take `labels=`, so they too return `output.loss`.
"""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

import torch  # noqa: E402

VOCAB = 1000
SEQ = 64


def _tokens(batch: int, seq: int = SEQ, vocab: int = VOCAB) -> torch.Tensor:
    return torch.randint(0, vocab, (batch, seq), dtype=torch.long)


def gpt2():
    from transformers import GPT2Config, GPT2LMHeadModel

    cfg = GPT2Config(vocab_size=VOCAB, n_positions=128, n_embd=128, n_layer=2, n_head=4)
    model = GPT2LMHeadModel(cfg)

    def make_inputs(batch):
        ids = _tokens(batch)
        return {"input_ids": ids, "labels": ids}

    return "hf_gpt2", model, make_inputs, None


def bert():
    from transformers import BertConfig, BertForMaskedLM

    cfg = BertConfig(vocab_size=VOCAB, hidden_size=128, num_hidden_layers=2,
                     num_attention_heads=4, intermediate_size=512, max_position_embeddings=128)
    model = BertForMaskedLM(cfg)

    def make_inputs(batch):
        ids = _tokens(batch)
        return {"input_ids": ids, "attention_mask": torch.ones(batch, SEQ, dtype=torch.long),
                "labels": ids}

    return "hf_bert", model, make_inputs, None


def llama():
    from transformers import LlamaConfig, LlamaForCausalLM

    cfg = LlamaConfig(vocab_size=VOCAB, hidden_size=128, intermediate_size=344,
                      num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                      max_position_embeddings=256)
    cfg._attn_implementation = "sdpa"
    model = LlamaForCausalLM(cfg)

    def make_inputs(batch):
        ids = _tokens(batch)
        return {"input_ids": ids, "labels": ids}

    return "hf_llama", model, make_inputs, None


def t5():
    from transformers import T5Config, T5ForConditionalGeneration

    cfg = T5Config(vocab_size=VOCAB, d_model=128, d_kv=32, d_ff=512, num_layers=2,
                   num_decoder_layers=2, num_heads=4, decoder_start_token_id=0, pad_token_id=0)
    model = T5ForConditionalGeneration(cfg)

    def make_inputs(batch):
        return {"input_ids": _tokens(batch), "labels": _tokens(batch, SEQ // 2)}

    return "hf_t5", model, make_inputs, None


def vit():
    from transformers import ViTConfig, ViTForImageClassification

    cfg = ViTConfig(image_size=32, patch_size=8, num_channels=3, hidden_size=128,
                    num_hidden_layers=2, num_attention_heads=4, intermediate_size=512,
                    num_labels=10)
    model = ViTForImageClassification(cfg)

    def make_inputs(batch):
        return {"pixel_values": torch.randn(batch, 3, 32, 32),
                "labels": torch.randint(0, 10, (batch,), dtype=torch.long)}

    return "hf_vit", model, make_inputs, None


def resnet():
    from transformers import ResNetConfig, ResNetForImageClassification

    cfg = ResNetConfig(num_channels=3, embedding_size=32, hidden_sizes=[32, 64, 128, 256],
                       depths=[1, 1, 1, 1], layer_type="basic", num_labels=10)
    model = ResNetForImageClassification(cfg)

    def make_inputs(batch):
        return {"pixel_values": torch.randn(batch, 3, 64, 64),
                "labels": torch.randint(0, 10, (batch,), dtype=torch.long)}

    return "hf_resnet", model, make_inputs, None


def convnext():
    from transformers import ConvNextConfig, ConvNextForImageClassification

    cfg = ConvNextConfig(num_channels=3, hidden_sizes=[32, 64, 128, 256], depths=[1, 1, 2, 1],
                         num_labels=10)
    model = ConvNextForImageClassification(cfg)

    def make_inputs(batch):
        return {"pixel_values": torch.randn(batch, 3, 64, 64),
                "labels": torch.randint(0, 10, (batch,), dtype=torch.long)}

    return "hf_convnext", model, make_inputs, None


def _masked_lm_inputs(batch):
    """Token ids, an all-ones attention mask (transformers reads it: all ones, it builds no 4D
    mask) and the ids as labels."""
    ids = _tokens(batch)
    return {"input_ids": ids, "attention_mask": torch.ones(batch, SEQ, dtype=torch.long),
            "labels": ids}


_DECODER = dict(vocab_size=VOCAB, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128)


def qwen2():
    from transformers import Qwen2Config, Qwen2ForCausalLM

    return "hf_qwen2", Qwen2ForCausalLM(Qwen2Config(**_DECODER)), _masked_lm_inputs, None


def phi3():
    from transformers import Phi3Config, Phi3ForCausalLM

    model = Phi3ForCausalLM(Phi3Config(**_DECODER, pad_token_id=0))
    return "hf_phi3", model, _masked_lm_inputs, None


def gpt_neox():
    from transformers import GPTNeoXConfig, GPTNeoXForCausalLM

    cfg = GPTNeoXConfig(vocab_size=VOCAB, hidden_size=64, intermediate_size=128,
                        num_hidden_layers=2, num_attention_heads=4, max_position_embeddings=128)
    return "hf_gpt_neox", GPTNeoXForCausalLM(cfg), _masked_lm_inputs, None


def bart():
    from transformers import BartConfig, BartForConditionalGeneration

    cfg = BartConfig(vocab_size=VOCAB, d_model=64, encoder_layers=2, decoder_layers=2,
                     encoder_attention_heads=4, decoder_attention_heads=4, encoder_ffn_dim=128,
                     decoder_ffn_dim=128, max_position_embeddings=128)

    def make_inputs(batch):
        return {"input_ids": _tokens(batch), "attention_mask": torch.ones(batch, SEQ,
                                                                          dtype=torch.long),
                "labels": _tokens(batch)}

    return "hf_bart", BartForConditionalGeneration(cfg), make_inputs, None


def wav2vec2_ctc():
    """wav2vec2 for CTC: its loss reads the label lengths (labels padded with -100). layerdrop is
    off: it drops an encoder layer at random in training, so no two real steps agree."""
    from transformers import Wav2Vec2Config, Wav2Vec2ForCTC

    cfg = Wav2Vec2Config(vocab_size=12, hidden_size=32, num_hidden_layers=2,
                         num_attention_heads=2, intermediate_size=64, conv_dim=(16, 16),
                         conv_stride=(5, 2), conv_kernel=(10, 3), num_conv_pos_embeddings=8,
                         num_conv_pos_embedding_groups=2, pad_token_id=0, layerdrop=0.0,
                         ctc_loss_reduction="mean", mask_time_prob=0.0)

    def make_inputs(batch):
        labels = torch.randint(1, 12, (batch, 5))
        labels[1:, 3:] = -100  # the others' labels are shorter
        return {"input_values": torch.randn(batch, 800), "labels": labels}

    return "hf_wav2vec2_ctc", Wav2Vec2ForCTC(cfg), make_inputs, None


BUILDERS = {"hf_gpt2": gpt2, "hf_bert": bert, "hf_llama": llama, "hf_t5": t5, "hf_vit": vit,
            "hf_resnet": resnet, "hf_convnext": convnext, "hf_qwen2": qwen2, "hf_phi3": phi3,
            "hf_gpt_neox": gpt_neox, "hf_bart": bart, "hf_wav2vec2_ctc": wav2vec2_ctc}
QUICK = ("hf_gpt2", "hf_bert", "hf_resnet")


def build(name: str):
    """Build a fresh copy of one model: (name, model, make_inputs, loss_fn)."""
    return BUILDERS[name]()


if __name__ == "__main__":
    for n in BUILDERS:
        _, m, mk, _ = build(n)
        out = m(**mk(2))
        print(n, sum(p.numel() for p in m.parameters()), float(out.loss))
