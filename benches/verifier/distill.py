"""The verifier's second stage: a student of the first-stage verifier.

  distill.py TEACHER PAIRS.json OUT LAYERS [EPOCHS] [LR]

TEACHER is a float BertForSequenceClassification: the first stage as
`train.py` leaves it, or the shipped int8 file read back by `from_onnx.py`.
The student starts as a copy of it keeping the encoder layers listed in
LAYERS ("0,1,2,3,4,5" keeps all six; "0,1,2,3" the bottom four) and is
trained on PAIRS (`build_data.py REPO OUT`, every kind) with half the loss
from the labels (binary cross-entropy) and half from the teacher's logits
(mean squared error).

Why a student rather than more training on the labels: the third part of
issue 35 retrained on every kind from the base model with the labels
alone, and the result was better by itself but worse behind the guards,
whose refusals and bars were chosen around the first stage's confidences.
The teacher's half of the loss keeps those confidences where the new
kinds say nothing, and the labels' half moves them where they do.

Each pair is read in a random order of its two questions, as p402 reads
both orders. Batches are made of pairs of about the same length
(`batches.py`)."""
import json, math, os, random, sys, time
import torch
from transformers import BertForSequenceClassification, BertTokenizerFast, get_linear_schedule_with_warmup
from batches import by_length

teacher_dir, pairs_file, out = sys.argv[1:4]
keep = [int(x) for x in sys.argv[4].split(",")]
epochs = int(sys.argv[5]) if len(sys.argv) > 5 else 2
lr = float(sys.argv[6]) if len(sys.argv) > 6 else 4e-5
torch.manual_seed(402); random.seed(402)
torch.set_num_threads(int(os.environ.get("P402_TRAIN_THREADS", "2")))
tok = BertTokenizerFast.from_pretrained(teacher_dir)
teacher = BertForSequenceClassification.from_pretrained(teacher_dir).eval()
student = BertForSequenceClassification.from_pretrained(teacher_dir)
student.bert.encoder.layer = torch.nn.ModuleList([student.bert.encoder.layer[i] for i in keep])
student.config.num_hidden_layers = len(keep)
pairs = json.load(open(pairs_file))
B = 32
batches = by_length(pairs, tok, B)
steps = epochs * math.ceil(len(pairs) / B)
opt = torch.optim.AdamW(student.parameters(), lr=lr, weight_decay=0.01)
sched = get_linear_schedule_with_warmup(opt, int(0.1 * steps), steps)
bce = torch.nn.BCEWithLogitsLoss(); mse = torch.nn.MSELoss()
student.train(); t0 = time.time(); step = 0
for ep in range(epochs):
    for batch in batches():
        ordered = [(p[0], p[1]) if random.random() < 0.5 else (p[1], p[0]) for p in batch]
        enc = tok([a for a, _ in ordered], [b for _, b in ordered], truncation=True, max_length=96, padding=True, return_tensors="pt")
        y = torch.tensor([float(p[2]) for p in batch])
        with torch.no_grad():
            t = teacher(**enc).logits.squeeze(-1)
        s = student(**enc).logits.squeeze(-1)
        loss = 0.5 * bce(s, y) + 0.5 * mse(s, t)
        loss.backward(); torch.nn.utils.clip_grad_norm_(student.parameters(), 1.0)
        opt.step(); sched.step(); opt.zero_grad(); step += 1
        if step % 20 == 0:
            print(f"epoch {ep} step {step}/{steps} loss {loss.item():.4f} {time.time()-t0:.0f}s", flush=True)
student.save_pretrained(out); tok.save_pretrained(out)
print("saved", out)
