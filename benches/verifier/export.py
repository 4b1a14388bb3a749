"""Exports the trained cross-encoder to ONNX and quantizes it to int8
(dynamic, per channel: real integer matrix products)."""
import sys, torch
from transformers import BertForSequenceClassification, BertTokenizerFast
from onnxruntime.quantization import quantize_dynamic, QuantType
mdir, out = sys.argv[1], sys.argv[2]
model = BertForSequenceClassification.from_pretrained(mdir).eval()
tok = BertTokenizerFast.from_pretrained(mdir)
enc = tok(["How do I reverse a list?"], ["Reverse a list, how?"], return_tensors="pt")
names = ["input_ids", "attention_mask", "token_type_ids"]
dyn = {n: {0: "batch", 1: "sequence"} for n in names}
dyn["logits"] = {0: "batch"}
torch.onnx.export(model, tuple(enc[n] for n in names), out + ".f32.onnx", input_names=names, output_names=["logits"],
                  dynamic_axes=dyn, opset_version=17, dynamo=False)
quantize_dynamic(out + ".f32.onnx", out, weight_type=QuantType.QInt8, per_channel=True)
print("wrote", out)
