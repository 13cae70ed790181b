"""SFTCollator: dynamic padding, and packing whose samples do not attend to each other (real tiny Llama)."""
from __future__ import annotations

import pytest
import torch

from tasks.collate import IGNORE_INDEX, SFTCollator

SAMPLES = [
    {"input_ids": [5, 6, 7, 8, 9], "labels": [-100, -100, 7, 8, 9]},
    {"input_ids": [10, 11, 12], "labels": [-100, 11, 12]},
    {"input_ids": [13, 14, 15, 16], "labels": [-100, -100, -100, 16]},
]


def test_padding():
    batch = SFTCollator(pad_token_id=0)(SAMPLES)
    assert batch["input_ids"].tolist()[1] == [10, 11, 12, 0, 0]
    assert batch["labels"].tolist()[1] == [-100, 11, 12, IGNORE_INDEX, IGNORE_INDEX]
    assert batch["attention_mask"].tolist()[1] == [1, 1, 1, 0, 0]
    assert SFTCollator(0, pad_to_multiple_of=8)(SAMPLES)["input_ids"].shape == (3, 8)
    assert SFTCollator(0, max_length=4)(SAMPLES)["labels"].tolist()[0] == [-100, -100, 7, 8]
    with pytest.raises(ValueError, match="differ in length"):
        SFTCollator(0)([{"input_ids": [1, 2], "labels": [1]}])


def test_packing_layout():
    batch = SFTCollator(pad_token_id=0, pack=True, max_length=8)(SAMPLES)
    assert "attention_mask" not in batch  # an all-ones mask would let packed samples attend to each other
    assert batch["use_cache"] is False  # so would the KV cache a model builds by default
    assert batch["input_ids"].tolist() == [[5, 6, 7, 8, 9, 10, 11, 12], [13, 14, 15, 16, 0, 0, 0, 0]]
    assert batch["position_ids"].tolist() == [[0, 1, 2, 3, 4, 0, 1, 2], [0, 1, 2, 3, 0, 1, 2, 3]]
    # each sample's first label is ignored: it would be predicted from the previous sample's last token
    assert batch["labels"].tolist() == [[-100, -100, 7, 8, 9, -100, 11, 12], [-100, -100, -100, 16] + [-100] * 4]
    one_row = SFTCollator(0, pack=True)(SAMPLES)
    assert one_row["input_ids"].shape == (1, 12)


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
def test_packed_logits_equal_separate_logits(tiny_lm, attn):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_lm, attn_implementation=attn).eval()
    samples = [{"input_ids": list(range(20, 20 + n)), "labels": list(range(20, 20 + n))} for n in (7, 4, 9)]
    packed = SFTCollator(pad_token_id=0, pack=True, max_length=32)(samples)
    with torch.no_grad():
        inputs = {k: v for k, v in packed.items() if k != "labels"}
        logits = model(**inputs).logits[0]
        pos = 0
        for sample in samples:
            n = len(sample["input_ids"])
            alone = model(input_ids=torch.tensor([sample["input_ids"]])).logits[0]
            torch.testing.assert_close(logits[pos:pos + n], alone, atol=1e-4, rtol=1e-4)
            pos += n
        # with the model's default KV cache, or an all-ones mask, the packed row leaks across samples
        for leaky_inputs in ({**inputs, "use_cache": True},
                             {**inputs, "attention_mask": torch.ones_like(packed["input_ids"])}):
            leaky = model(**leaky_inputs).logits[0]
            assert not torch.allclose(leaky[7:11], logits[7:11], atol=1e-4)
    # the loss over a packed batch equals the token-weighted loss over the padded batch
    padded = SFTCollator(pad_token_id=0)(samples)
    padded["labels"][:, 0] = IGNORE_INDEX
    with torch.no_grad():
        loss_packed = model(**packed).loss
        loss_padded = model(**padded).loss
    torch.testing.assert_close(loss_packed, loss_padded, atol=1e-4, rtol=1e-4)


def test_length_batches_group_similar_lengths_longest_first_within_a_token_budget():
    from tasks.collate import length_batches

    lengths = [5, 300, 7, 290, 6, 8, 512, 9]
    batches = length_batches(lengths, batch_size=3, token_budget=600)
    assert sorted(i for b in batches for i in b) == list(range(len(lengths)))  # every row once
    assert batches[0] == [6]  # the longest first, alone: 512 x 2 would pass the budget
    assert [lengths[b[0]] for b in batches] == sorted((lengths[b[0]] for b in batches), reverse=True)
    assert all(len(b) <= 3 and max(lengths[i] for i in b) * len(b) <= 600 for b in batches)
    assert length_batches(lengths, batch_size=3) == [[6, 1, 3], [7, 5, 2], [4, 0]]  # no budget: rows only
