"""bench.py - per-step training times of the default sizes (run on an idle machine before
planning a run: python3 -m sdg_train.bench). Wall and process CPU time; under contention from
other processes the wall time grows and the CPU time includes OpenMP spin-waiting.
"""
import os
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
import time, torch, sys
from . import models
torch.set_num_threads(2); torch.manual_seed(0)
def bench(name, fn, n=5):
    fn(); t=time.time(); c=time.process_time()
    for _ in range(n): fn()
    w=(time.time()-t)/n; cp=(time.process_time()-c)/n
    print("%-50s wall %.2f s/step  cpu %.2f s/step (=> ~%.2f s/step on 2 free cores)" % (name, w, cp, cp/2), flush=True)
vae = models.AutoencoderKL(32, (1,1,2,2), 1, 4); opt = torch.optim.Adam(vae.parameters(), 1e-3)
x = torch.randn(32,3,64,64)
def step():
    m, lv = vae.encode(x); z = m + torch.randn_like(m)*(0.5*lv).exp()
    loss = (vae.decode(z)-x).abs().mean(); opt.zero_grad(); loss.backward(); opt.step()
bench("vae 64px ch32 (1,1,2,2) b32", step)
xe = torch.randn(64,3,64,64)
with torch.no_grad(): bench("vae encode b64", lambda: vae.encode(xe), 2)
for tw in (128, 64):
    u = models.UNet(4, 64, 4, (1,2), 2, (0,1), tw); t = models.CLIPTextModel(610, tw, 2)
    opt = torch.optim.AdamW(list(u.parameters())+list(t.parameters()), 1e-4)
    x = torch.randn(64,4,8,8); ids = torch.randint(0,610,(64,77)); ts = torch.randint(0,1000,(64,))
    def step():
        loss = (u(x, ts, t(ids))-x).pow(2).mean(); opt.zero_grad(); loss.backward(); opt.step()
    bench("diffusion unet ch64 (1,2) x2 text w%d b64" % tw, step)
