"""Scores pairs with a candidate verifier as p402 reads them (both orders,
the lower confidence; or with `--one-way`, asked then cached only), for
`P402_QUALITY_SCORES` (benches/cache_quality.rs): a candidate is measured
on the hard sets before it is built into the binary.

  score.py MODEL.onnx TOKENIZER.json DECISIONS.tsv OUT.tsv [--one-way]

DECISIONS.tsv is what `P402_QUALITY_DECISIONS` writes (the pairs are its
8th and 9th columns)."""
import sys
import numpy as np, onnxruntime as ort
from tokenizers import Tokenizer

model, tokenizer, decisions, out = sys.argv[1:5]
one_way = "--one-way" in sys.argv[5:]
tok = Tokenizer.from_file(tokenizer)
tok.enable_truncation(96)  # as src/embed/model.rs (PAIR_TOKENS)
tok.no_padding()
options = ort.SessionOptions()
options.intra_op_num_threads = 1
session = ort.InferenceSession(model, options)

def confidence(first, second):
    e = tok.encode(first, second)
    feed = {name: np.array([values], dtype=np.int64) for name, values in
            (("input_ids", e.ids), ("attention_mask", e.attention_mask), ("token_type_ids", e.type_ids))}
    return 1 / (1 + np.exp(-float(session.run(None, feed)[0].reshape(-1)[0])))

with open(out, "w") as o:
    for line in open(decisions):
        a, b = line.rstrip("\n").split("\t")[7:9]
        v = confidence(a, b) if one_way else min(confidence(a, b), confidence(b, a))
        o.write(f"{a}\t{b}\t{v:.6f}\n")
