"""check_resume.py - an interrupted and resumed training run ends with the same weights as an
uninterrupted one. Runs train.py twice on a micro configuration (a few hundred pictures, a few
dozen steps, one thread) in two fresh work folders: once straight through, once stopped by SIGTERM
in each training stage (VAE, plain diffusion, then the 9-channel inpainting fine-tune with
hidden-object captions) and started again. Every tensor of the two final.pt files must
be identical bit for bit. Takes about a minute.

    python3 -m sdg_train.check_resume [SCRATCH_DIR]

Not here: the training itself (train.py), the full-size run (train-default-model.sh).
"""
import os
import signal
import subprocess
import sys
import tempfile
import time

import torch

MICRO = ["--n-images", "300", "--vae-steps", "40", "--vae-batch", "8", "--steps", "60",
         "--batch", "8", "--threads", "1", "--log-every", "1", "--quiet", "--min-snr", "5",
         "--inpaint-steps", "30", "--object-caption-p", "0.5", "--known-weight", "5"]


def train(workdir, stop_at=None):
    """Runs train.py; with stop_at=(stage, step) sends SIGTERM once progress.log shows that step
    of that stage, and returns after the process has checkpointed and exited."""
    cmd = [sys.executable, "-m", "sdg_train.train", "--workdir", workdir] + MICRO
    proc = subprocess.Popen(cmd, cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    if stop_at:
        stage, step = stop_at
        log = os.path.join(workdir, "progress.log")
        mark = "%s: step %d/" % (stage, step)
        while proc.poll() is None:
            if os.path.exists(log) and mark in open(log).read():
                proc.send_signal(signal.SIGTERM)
                break
            time.sleep(0.05)
    if proc.wait() != 0:
        raise SystemExit("train.py failed (status %d) in %s" % (proc.returncode, workdir))


def main(argv):
    scratch = argv[0] if argv else tempfile.mkdtemp(prefix="sdg-resume-")
    straight, resumed = os.path.join(scratch, "straight"), os.path.join(scratch, "resumed")
    train(straight)
    train(resumed, ("vae", 15))
    train(resumed, ("diffusion", 25))
    train(resumed, ("inpaint", 12))
    train(resumed)
    log = open(os.path.join(resumed, "progress.log")).read()
    for what in ("vae: resumed", "diffusion: resumed", "inpaint: resumed"):
        if what not in log:
            raise SystemExit("the resumed run never did '%s': the interruption came too late" % what)
    a = torch.load(os.path.join(straight, "final.pt"))["state_dict"]
    b = torch.load(os.path.join(resumed, "final.pt"))["state_dict"]
    if a.keys() != b.keys():
        raise SystemExit("different tensors in the two runs")
    differ = [k for k in a if not torch.equal(a[k], b[k])]
    if differ:
        raise SystemExit("%d of %d tensors differ after resuming, e.g. %s" % (len(differ), len(a), differ[0]))
    print("resume check: %d tensors identical after three interruptions (%s)" % (len(a), scratch))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
