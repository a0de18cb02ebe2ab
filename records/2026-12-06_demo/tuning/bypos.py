import sys, torch
from factgpt.checkpoint import load_checkpoint
from factgpt.data import CharCorruptionDataset, read_text, PAD_ID
from factgpt.model import lm_loss
run = sys.argv[1]
corpus = CharCorruptionDataset(read_text(f"{run}/corpus.txt"), 128, seed=0)
for variant in ("perceiver", "vanilla"):
    ck = load_checkpoint(next(__import__("pathlib").Path(run).glob(f"{variant}_pretrain_seed*.pretrain.safetensors")))
    model = ck.build_model().eval(); m = ck.config.bottleneck_dim or 48
    corpus.reseed(1)
    x, y = corpus.draw_batch(torch.arange(len(corpus)))
    with torch.no_grad():
        logits = model(x)[0]
    loss = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1), ignore_index=PAD_ID, reduction="none").view(y.shape)
    pos = torch.arange(128)[None].expand_as(y); valid = y != PAD_ID
    for lo, hi in ((0, 24), (24, 48), (48, 64), (64, 128)):
        sel = valid & (pos >= lo) & (pos < hi)
        print(variant, f"m={ck.config.bottleneck_dim} positions {lo}-{hi - 1}: mean loss {loss[sel].mean().item():.3f} over {int(sel.sum())} targets")
