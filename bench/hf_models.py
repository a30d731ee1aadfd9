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
def _ids(batch):
    return _tokens(batch, 32, 500)


def _seq_cls_inputs(batch):
    return {"input_ids": _ids(batch), "attention_mask": torch.ones(batch, 32, dtype=torch.long),
            "labels": torch.randint(0, 2, (batch,))}


def _image_inputs(batch):
    return {"pixel_values": torch.randn(batch, 3, 32, 32), "labels": torch.randint(0, 3, (batch,))}


def _lm32_inputs(batch):
    ids = _ids(batch)
    return {"input_ids": ids, "attention_mask": torch.ones(batch, 32, dtype=torch.long),
            "labels": ids}


def _family(name, make_inputs, build):
    """A small model of one more family (tiny config, random weights)."""
    def builder():
        import transformers as T

        return name, build(T), make_inputs, None
    return builder


MORE = {
    "hf_falcon": _family("hf_falcon", _lm32_inputs, lambda T: T.FalconForCausalLM(T.FalconConfig(
        vocab_size=500, hidden_size=64, num_hidden_layers=2, num_attention_heads=4))),
    "hf_mistral": _family("hf_mistral", _lm32_inputs, lambda T: T.MistralForCausalLM(
        T.MistralConfig(vocab_size=500, hidden_size=64, intermediate_size=128,
                        num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                        max_position_embeddings=64))),
    "hf_distilbert": _family("hf_distilbert", _seq_cls_inputs, lambda T:
                             T.DistilBertForSequenceClassification(T.DistilBertConfig(
                                 vocab_size=500, dim=64, n_layers=2, n_heads=4, hidden_dim=128,
                                 max_position_embeddings=64))),
    "hf_roberta": _family("hf_roberta", _seq_cls_inputs, lambda T:
                          T.RobertaForSequenceClassification(T.RobertaConfig(
                              vocab_size=500, hidden_size=64, num_hidden_layers=2,
                              num_attention_heads=4, intermediate_size=128,
                              max_position_embeddings=70))),
    "hf_albert": _family("hf_albert", _seq_cls_inputs, lambda T:
                         T.AlbertForSequenceClassification(T.AlbertConfig(
                             vocab_size=500, embedding_size=32, hidden_size=64,
                             num_hidden_layers=2, num_attention_heads=4, intermediate_size=128,
                             max_position_embeddings=64))),
    "hf_deit": _family("hf_deit", _image_inputs, lambda T: T.DeiTForImageClassification(
        T.DeiTConfig(image_size=32, patch_size=8, hidden_size=64, num_hidden_layers=2,
                     num_attention_heads=4, intermediate_size=128, num_labels=3))),
    "hf_swin": _family("hf_swin", _image_inputs, lambda T: T.SwinForImageClassification(
        T.SwinConfig(image_size=32, patch_size=4, embed_dim=16, depths=[1, 1], num_heads=[2, 2],
                     window_size=4, num_labels=3))),
    "hf_segformer": _family(
        "hf_segformer", lambda b: {"pixel_values": torch.randn(b, 3, 32, 32),
                                   "labels": torch.randint(0, 3, (b, 32, 32))},
        lambda T: T.SegformerForSemanticSegmentation(T.SegformerConfig(
            num_encoder_blocks=2, depths=[1, 1], sr_ratios=[2, 1], hidden_sizes=[16, 32],
            num_attention_heads=[1, 2], decoder_hidden_size=32, num_labels=3, patch_sizes=[7, 3],
            strides=[4, 2]))),
    "hf_mamba": _family("hf_mamba", lambda b: {"input_ids": _ids(b), "labels": _ids(b)},
                        lambda T: T.MambaForCausalLM(T.MambaConfig(
                            vocab_size=500, hidden_size=32, state_size=8, num_hidden_layers=2,
                            expand=2, conv_kernel=4))),
    "hf_clip": _family(
        "hf_clip", lambda b: {"input_ids": _ids(b),
                              "attention_mask": torch.ones(b, 32, dtype=torch.long),
                              "pixel_values": torch.randn(b, 3, 32, 32), "return_loss": True},
        lambda T: T.CLIPModel(T.CLIPConfig(
            text_config=dict(vocab_size=500, hidden_size=32, intermediate_size=64,
                             num_hidden_layers=1, num_attention_heads=2,
                             max_position_embeddings=32),
            vision_config=dict(image_size=32, patch_size=8, hidden_size=32, intermediate_size=64,
                               num_hidden_layers=1, num_attention_heads=2)))),
    "hf_whisper": _family(
        "hf_whisper", lambda b: {"input_features": torch.randn(b, 16, 64),
                                 "labels": torch.randint(3, 500, (b, 16))},
        lambda T: T.WhisperForConditionalGeneration(T.WhisperConfig(
            vocab_size=500, d_model=64, encoder_layers=2, decoder_layers=2,
            encoder_attention_heads=4, decoder_attention_heads=4, encoder_ffn_dim=128,
            decoder_ffn_dim=128, num_mel_bins=16, max_source_positions=32,
            max_target_positions=64, pad_token_id=0, decoder_start_token_id=1, eos_token_id=2,
            bos_token_id=1))),
}
BUILDERS.update(MORE)

_MOE = dict(vocab_size=500, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
            num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
            num_experts_per_tok=2)
# Mixture-of-experts models: their figures follow the routing assumed (graphcalc.routing), so
# their real steps are routed the same way (ForcedRouting); kept out of BUILDERS, whose real
# steps route as the random router does.
MOE = {
    # transformers' grouped_mm experts (aten::_grouped_mm)
    "hf_mixtral": _family("hf_mixtral", _lm32_inputs, lambda T: T.MixtralForCausalLM(
        T.MixtralConfig(**_MOE, num_local_experts=4))),
    # the eager experts loop: nonzero() over the experts hit, where() per expert
    "hf_qwen2_moe": _family("hf_qwen2_moe", _lm32_inputs, lambda T: T.Qwen2MoeForCausalLM(
        T.Qwen2MoeConfig(**_MOE, num_experts=4, moe_intermediate_size=32,
                         shared_expert_intermediate_size=64, experts_implementation="eager"))),
}


QUICK = ("hf_gpt2", "hf_bert", "hf_resnet")


def build(name: str):
    """Build a fresh copy of one model: (name, model, make_inputs, loss_fn)."""
    return (BUILDERS.get(name) or MOE[name])()


if __name__ == "__main__":
    for n in BUILDERS:
        _, m, mk, _ = build(n)
        out = m(**mk(2))
        print(n, sum(p.numel() for p in m.parameters()), float(out.loss))
