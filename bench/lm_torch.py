"""The Shakespeare example's model in PyTorch, written for bench/lm_train_throughput.sh: a
nanoGPT-style character GPT with the same shapes, initialisation scale, optimiser, schedule,
data split and evaluation windows as examples/shakespeare/modelforge.toml.

    python bench/lm_torch.py CORPUS STEPS THREADS

Prints one line: steps=… tokens_per_sec=… val_loss=… seconds=…
"""

import gzip
import math
import sys
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

CONTEXT, WIDTH, HEADS, LAYERS, BATCH = 64, 128, 4, 4, 12
LR, MIN_LR, WARMUP, DECAY, CLIP = 1e-3, 1e-4, 100, 0.1, 1.0
EVAL_EVERY, EVAL_WINDOWS = 250, 240


class Block(nn.Module):
    def __init__(self):
        super().__init__()
        self.ln_1 = nn.LayerNorm(WIDTH)
        self.q = nn.Linear(WIDTH, WIDTH, bias=False)
        self.k = nn.Linear(WIDTH, WIDTH, bias=False)
        self.v = nn.Linear(WIDTH, WIDTH, bias=False)
        self.o = nn.Linear(WIDTH, WIDTH, bias=False)
        self.ln_2 = nn.LayerNorm(WIDTH)
        self.fc = nn.Linear(WIDTH, 4 * WIDTH, bias=False)
        self.proj = nn.Linear(4 * WIDTH, WIDTH, bias=False)

    def forward(self, x):
        b, t, c = x.shape
        h = self.ln_1(x)
        split = lambda z: z.view(b, t, HEADS, c // HEADS).transpose(1, 2)
        a = F.scaled_dot_product_attention(split(self.q(h)), split(self.k(h)), split(self.v(h)), is_causal=True)
        x = x + self.o(a.transpose(1, 2).reshape(b, t, c))
        return x + self.proj(F.gelu(self.fc(self.ln_2(x))))


class GPT(nn.Module):
    def __init__(self, vocab):
        super().__init__()
        # Linear layers keep PyTorch's default initialisation (as burn's does); the tables
        # are drawn from N(0, 0.02²) as modelforge's embeddings are.
        self.wte = nn.Embedding(vocab, WIDTH)
        self.wpe = nn.Embedding(CONTEXT, WIDTH)
        nn.init.normal_(self.wte.weight, std=0.02)
        nn.init.normal_(self.wpe.weight, std=0.02)
        self.h = nn.ModuleList(Block() for _ in range(LAYERS))
        self.ln_f = nn.LayerNorm(WIDTH)

    def forward(self, ids, targets):
        x = self.wte(ids) + self.wpe.weight[: ids.shape[1]]
        for block in self.h:
            x = block(x)
        logits = self.ln_f(x) @ self.wte.weight.T
        return F.cross_entropy(logits.view(-1, logits.shape[-1]), targets.view(-1))


def learning_rate(step, total):
    """modelforge's cosine schedule: linear warm-up, then cosine down to MIN_LR."""
    if step < WARMUP:
        return LR * (step + 1) / WARMUP
    progress = min((step - WARMUP) / max(total - WARMUP, 1), 1.0)
    return MIN_LR + 0.5 * (LR - MIN_LR) * (1 + math.cos(math.pi * progress))


def main():
    corpus, steps, threads = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    torch.set_num_threads(threads)
    torch.manual_seed(1337)
    text = gzip.open(corpus, "rt", encoding="utf-8").read() if corpus.endswith(".gz") else open(corpus).read()
    chars = sorted(set(text))
    index = {c: i for i, c in enumerate(chars)}
    ids = torch.tensor([index[c] for c in text], dtype=torch.long)
    cut = int(len(ids) * 0.9)
    train, val = ids[:cut], ids[cut:]
    # The fixed evaluation windows, spaced as modelforge spaces them.
    last = len(val) - CONTEXT - 1
    count = min(EVAL_WINDOWS, last + 1)
    starts = [i * last // (count - 1) for i in range(count)]
    vx = torch.stack([val[s : s + CONTEXT] for s in starts])
    vy = torch.stack([val[s + 1 : s + 1 + CONTEXT] for s in starts])

    model = GPT(len(chars))
    decayed = [p for n, p in model.named_parameters() if p.dim() >= 2 and not n.startswith("w")]
    other = [p for n, p in model.named_parameters() if not (p.dim() >= 2 and not n.startswith("w"))]
    optim = torch.optim.AdamW(
        [{"params": decayed, "weight_decay": DECAY}, {"params": other, "weight_decay": 0.0}],
        lr=LR, betas=(0.9, 0.99), eps=1e-8,
    )

    def evaluate():
        model.eval()
        with torch.no_grad():
            total = sum(model(vx[i : i + BATCH], vy[i : i + BATCH]).item() * len(vx[i : i + BATCH]) for i in range(0, len(vx), BATCH))
        model.train()
        return total / len(vx)

    start = time.perf_counter()
    val_loss = float("nan")
    for step in range(steps):
        at = torch.randint(len(train) - CONTEXT, (BATCH,))
        x = torch.stack([train[s : s + CONTEXT] for s in at])
        y = torch.stack([train[s + 1 : s + 1 + CONTEXT] for s in at])
        for group in optim.param_groups:
            group["lr"] = learning_rate(step, steps)
        loss = model(x, y)
        optim.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), CLIP)
        optim.step()
        if (step + 1) % EVAL_EVERY == 0 or step + 1 == steps:
            val_loss = evaluate()
    seconds = time.perf_counter() - start
    print(f"steps={steps} tokens_per_sec={steps * BATCH * CONTEXT / seconds:.0f} val_loss={val_loss:.4f} seconds={seconds:.1f}")


if __name__ == "__main__":
    main()
