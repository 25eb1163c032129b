"""Does a bottleneck model's answer read z, or the chain c through z's hidden states?

The bottleneck layout [x; c; z; y] hides c from the answer's attention, but z's positions attend
to c, so from the second layer on the answer can read c through them without reading z's tokens
(tests/data/test_abstract.py shows the one-layer case, where it cannot). `chain_leak` measures
which one the answer uses: teacher-forced, with each question's own z, it swaps in the next
question's chain and scores the answer tokens against the question's answer and against the
swapped chain's answer. An answer that reads z (and x) keeps the question's answer; one that
reads c follows the chain.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from latent.data.pipeline import collate
from latent.data.special_tokens import abstract_tokens
from latent.data.tasks import Example
from latent.methods.abstract_cot import layouts as abstract_data


def make_predict(graphdef):
    """A jitted predict(params, tokens_BxT, padding_BxT, segments_BxT) -> argmax next token [B, T]
    of the model under the bottleneck mask; params are an argument, so new params reuse the compile."""

    @jax.jit
    def argmax_BxT(params, tokens_BxT, padding_BxT, segments_BxT):
        model = nnx.merge(graphdef, params)
        mask = abstract_data.bottleneck_attention_mask(segments_BxT)
        return jnp.argmax(model(tokens_BxT, padding_mask=padding_BxT, attention_mask=mask).logits, axis=-1)

    return argmax_BxT


def model_predictor(graphdef, params):
    """predict(tokens_BxT, padding_BxT, segments_BxT) -> argmax next token [B, T] (numpy) of the
    model under the bottleneck mask: `chain_leak`'s predict for one set of params."""
    argmax_BxT = make_predict(graphdef)
    return lambda tokens_BxT, padding_BxT, segments_BxT: np.asarray(argmax_BxT(params, tokens_BxT, padding_BxT, segments_BxT))


def chain_leak(predict, tokenizer, examples: Sequence[Example], spans: Sequence[Sequence[str]] | None, *,
               num_tokens: int, max_len: int, batch_size: int = 100) -> dict:
    """Answer-token accuracy (teacher-forced, tokens after <endabstract>) of `predict` (see
    `model_predictor`) on [x; c; z; y] with z = `spans[i]` for question i:

        own                     c and y of question i
        swapped_vs_question     c of question i+1 (cyclic), y of question i
        swapped_vs_chain        c of question i+1, y of question i+1

    Left out of all three: examples over `max_len`, and those whose span holds a token outside
    the abstract vocabulary (a key's `<unkeyed>`: a word its training examples never reached).
    """
    if len(examples) < 2:
        raise ValueError(f"chain_leak needs at least 2 examples to swap chains; got {len(examples)}")
    if spans is not None and len(spans) != len(examples):
        raise ValueError(f"chain_leak: {len(spans)} spans for {len(examples)} examples")

    with_z = list(examples) if spans is None else [
        dataclasses.replace(e, meta={**e.meta, "abstract": list(z)}) for e, z in zip(examples, spans)
    ]
    vocabulary = set(abstract_tokens(num_tokens))
    keyed = [i for i in range(len(with_z)) if spans is None or set(spans[i]) <= vocabulary]
    records, _ = abstract_data.tokenize_abstract_examples(  # drops what is over max_len
        [with_z[i] for i in keyed], tokenizer, "abstract_bottleneck", max_len, num_tokens=num_tokens, seed=0
    )
    fits = [keyed[r.source_index] for r in records]
    nxt = {i: fits[(k + 1) % len(fits)] for k, i in enumerate(fits)}
    own = [with_z[i] for i in fits]
    swapped = [dataclasses.replace(with_z[i], steps=with_z[nxt[i]].steps) for i in fits]
    swapped_chain_answer = [dataclasses.replace(e, answer=with_z[nxt[i]].answer) for e, i in zip(swapped, fits)]

    def accuracy(batch_examples):
        correct = total = 0
        for start in range(0, len(batch_examples), batch_size):
            records, _ = abstract_data.tokenize_abstract_examples(
                batch_examples[start : start + batch_size], tokenizer, "abstract_bottleneck", max_len,
                num_tokens=num_tokens, seed=0,
            )
            batch = collate(records, pad_id=tokenizer.pad_id, max_len=max_len)
            predicted_BxT = predict(batch["tokens"], batch["padding_mask"], batch["segments"])
            # the prediction at t is for token t+1; both inside the answer side (after <endabstract>)
            answer_BxT = (batch["segments"][:, 1:] == abstract_data.ANSWER) & (batch["segments"][:, :-1] == abstract_data.ANSWER)
            hits_BxT = predicted_BxT[:, :-1] == batch["tokens"][:, 1:]
            correct += int(hits_BxT[answer_BxT].sum())
            total += int(answer_BxT.sum())
        return correct / max(total, 1)

    return {
        "n": len(fits),
        "own": accuracy(own),
        "swapped_vs_question": accuracy(swapped),
        "swapped_vs_chain": accuracy(swapped_chain_answer),
    }

