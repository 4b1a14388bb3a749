"""Batches of pairs of about the same length, for train.py and distill.py.

Padded to the longest pair of a random batch, the model reads 2.6 times
the tokens there are; a shuffled pool of 50 batches sorted by length
wastes 3%. Uses the `random` module's shared state, so a seed set by the
caller decides the order."""
import random

def by_length(pairs, tok, size):
    """A function that shuffles `pairs` and returns them as batches of
    `size`, each of pairs of about the same length (in `tok`'s tokens)."""
    length = {id(p): len(tok(p[0], p[1], truncation=True, max_length=96)["input_ids"]) for p in pairs}
    def batches():
        random.shuffle(pairs)
        out = []
        for k in range(0, len(pairs), 50 * size):
            pool = sorted(pairs[k:k + 50 * size], key=lambda p: length[id(p)])
            out += [pool[i:i + size] for i in range(0, len(pool), size)]
        random.shuffle(out)
        return out
    return batches
