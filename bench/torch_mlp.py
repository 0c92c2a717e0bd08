"""PyTorch side of bench/train_throughput.sh: the reference MLP on real MNIST.

Same model (784-128-128-10, PyTorch's default init), Adam 1e-3, cross-entropy,
per-step loss and accuracy read back as modelforge does, a shuffled permutation
per epoch; one warm-up epoch, then the median samples/s of three epochs.
"""
import gzip, sys, time
import numpy as np
import torch
import torch.nn.functional as F


def load(path, offset):
    with gzip.open(path, "rb") as f:
        return np.frombuffer(f.read(), dtype=np.uint8, offset=offset)


def main():
    root, batch, threads, examples = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
    torch.set_num_threads(threads)
    torch.manual_seed(42)
    x = load(f"{root}/train-images-idx3-ubyte.gz", 16).reshape(-1, 784)[:examples]
    y = load(f"{root}/train-labels-idx1-ubyte.gz", 8)[:examples]
    X = torch.tensor(x, dtype=torch.float32) / 255.0
    Y = torch.tensor(y, dtype=torch.int64)
    model = torch.nn.Sequential(
        torch.nn.Flatten(), torch.nn.Linear(784, 128), torch.nn.ReLU(),
        torch.nn.Linear(128, 128), torch.nn.ReLU(), torch.nn.Linear(128, 10))
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    rates = []
    for epoch in range(4):
        perm = torch.randperm(len(X))
        start = time.perf_counter()
        seen = 0
        for i in range(0, len(X), batch):
            idx = perm[i:i + batch]
            xb, yb = X[idx], Y[idx]
            opt.zero_grad()
            logits = model(xb)
            loss = F.cross_entropy(logits, yb)
            loss.backward()
            opt.step()
            loss.item()
            (logits.argmax(1) == yb).sum().item()
            seen += len(idx)
        if epoch > 0:
            rates.append(seen / (time.perf_counter() - start))
    rate = sorted(rates)[len(rates) // 2]
    print(f"pytorch batch={batch} threads={threads} samples_per_sec={rate:.0f} torch={torch.__version__}")


if __name__ == "__main__":
    main()
