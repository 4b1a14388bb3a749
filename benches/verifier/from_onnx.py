"""Reads p402's int8 verifier (ONNX, from export.py) back into a float
BertForSequenceClassification, to continue training it: each int8 weight
times its scale, less its zero point, under the name of the bias its
product feeds (or of the embedding table it was quantized from)."""
import sys
import numpy as np, onnx, torch
from onnx import numpy_helper
from transformers import BertConfig, BertForSequenceClassification, BertTokenizerFast

onnx_file, base, out = sys.argv[1:4]
m = onnx.load(onnx_file)
init = {i.name: numpy_helper.to_array(i) for i in m.graph.initializer}
consumers = {}
for n in m.graph.node:
    for i in n.input:
        consumers.setdefault(i, []).append(n)

def dequantized(name):
    base_name = name[: -len("_quantized")]
    q = init[name].astype(np.float32)
    return (q - init[base_name + "_zero_point"].astype(np.float32)) * init[base_name + "_scale"], base_name

state = {}
for n in m.graph.node:
    if n.op_type == "MatMulInteger" and n.input[1] in init:
        w, _ = dequantized(n.input[1])  # [in, out]
        frontier, seen, bias = [n.output[0]], set(), None
        while frontier and bias is None:
            t = frontier.pop(0)
            for c in consumers.get(t, []):
                if c.name in seen: continue
                seen.add(c.name)
                named = [i for i in c.input if i.endswith(".bias") and i in init]
                if c.op_type == "Add" and named:
                    bias = named[0]; break
                frontier.extend(c.output)
        assert bias, n.name
        state[bias[: -len(".bias")] + ".weight"] = torch.tensor(w.T.copy())
    elif n.op_type == "Gather" and n.input[0].endswith("_quantized") and n.input[0] in init:
        w, name = dequantized(n.input[0])
        state[name] = torch.tensor(w)
for k, v in init.items():
    if k.startswith(("bert.", "classifier.")) and not k.endswith(("_quantized", "_scale", "_zero_point")):
        state[k] = torch.tensor(v.copy())
config = BertConfig.from_pretrained(base, num_labels=1)
model = BertForSequenceClassification(config)
missing, unexpected = model.load_state_dict(state, strict=False)
missing = [k for k in missing if not k.endswith("position_ids")]
assert not missing and not unexpected, (missing, unexpected)
model.save_pretrained(out)
BertTokenizerFast.from_pretrained(base).save_pretrained(out)
print("read", len(state), "tensors into", out)
