"""Fine-tunes all-MiniLM-L6-v2 (Apache-2.0) as a cross-encoder: both
questions in, one logit out ("would one answer serve both?")."""
import json, math, random, sys, time
import torch
from transformers import BertTokenizerFast, BertForSequenceClassification, get_linear_schedule_with_warmup
from batches import by_length

base, pairs_file, out = sys.argv[1], sys.argv[2], sys.argv[3]
epochs = int(sys.argv[4]) if len(sys.argv) > 4 else 2
lr = float(sys.argv[5]) if len(sys.argv) > 5 else 4e-5
torch.manual_seed(402); random.seed(402)
torch.set_num_threads(int(__import__("os").environ.get("P402_TRAIN_THREADS", "2")))
tok = BertTokenizerFast.from_pretrained(base)
model = BertForSequenceClassification.from_pretrained(base, num_labels=1)
pairs = json.load(open(pairs_file))
B = 32
steps = epochs * math.ceil(len(pairs) / B)
opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01)
sched = get_linear_schedule_with_warmup(opt, int(0.1 * steps), steps)
lossf = torch.nn.BCEWithLogitsLoss()
batches = by_length(pairs, tok, B)
model.train(); t0 = time.time(); step = 0
for ep in range(epochs):
    for batch in batches():
        enc = tok([p[0] for p in batch], [p[1] for p in batch], truncation=True, max_length=96, padding=True, return_tensors="pt")
        y = torch.tensor([float(p[2]) for p in batch])
        logit = model(**enc).logits.squeeze(-1)
        loss = lossf(logit, y)
        loss.backward(); torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step(); sched.step(); opt.zero_grad(); step += 1
        if step % 10 == 0:
            print(f"epoch {ep} step {step}/{steps} loss {loss.item():.4f} {time.time()-t0:.0f}s", flush=True)
model.save_pretrained(out); tok.save_pretrained(out)
print("saved", out)
