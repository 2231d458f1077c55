"""The lean decoder on CUDA: the logits of Hugging Face `generate` at every step, and the same tokens
greedy and sampled under a seed (on the CPU the tests in tests/models check bit-for-bit equality)."""
from __future__ import annotations

import pytest
import torch
from transformers import GenerationConfig

from tests.models.test_lean_decode import hf_and_lean, prompts_of, two_layer_model
from xkdbench.models import lean_decode

pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device: run on a GPU machine")]
CUDA = torch.device("cuda")


def on_cuda(model):
    model.model.to(CUDA)
    return model


@pytest.mark.parametrize("autocast", [False, True])
def test_step_logits_follow_generate_on_cuda(tokenizer, family, autocast):
    model = on_cuda(two_layer_model(tokenizer, family))
    model.model.eval()
    batch = prompts_of(model).to(CUDA)
    config = GenerationConfig(max_new_tokens=12, do_sample=False, eos_token_id=model.eos_id, pad_token_id=model.pad_id,
                              decoder_start_token_id=getattr(model.model.config, "decoder_start_token_id", None),
                              return_dict_in_generate=True, output_logits=True)
    context = torch.autocast("cuda", dtype=torch.bfloat16) if autocast else torch.autocast("cuda", enabled=False)
    with context:
        out = model.model.generate(input_ids=batch.prompt_ids, attention_mask=batch.prompt_mask,
                                   generation_config=config)
        new = out.sequences[:, 1:] if family == "t5" else out.sequences[:, batch.prompt_ids.shape[1]:]
        decoder = lean_decode.decoder_for(model.model, batch.prompt_ids, batch.prompt_mask, capacity=new.shape[1])
        worst = 0.0
        for t, expected in enumerate(out.logits):
            worst = max(worst, float((decoder.logits - expected).abs().max()))
            decoder.advance(new[:, t])
    print(f"{family} autocast={autocast}: largest logit difference from generate {worst:.3g}")
    assert worst <= (5e-2 if autocast else 1e-4)


@pytest.mark.parametrize("do_sample", [False, True])
def test_same_tokens_as_generate_on_cuda(tokenizer, family, do_sample):
    model = on_cuda(two_layer_model(tokenizer, family))
    batch = prompts_of(model, 12).to(CUDA)
    hf, lean, same_state = hf_and_lean(model, batch, 0, max_new_tokens=24, do_sample=do_sample,
                                       **({"temperature": 0.8, "top_p": 0.9} if do_sample else {}))
    differing = int((lean.target_ids != hf.target_ids).any(dim=1).sum()) if lean.target_ids.shape == hf.target_ids.shape \
        else batch.size
    print(f"{family} do_sample={do_sample}: {differing} of {batch.size} rows differ from generate")
    assert torch.equal(lean.target_ids, hf.target_ids) and torch.equal(lean.target_mask, hf.target_mask)
