"""sdg_train - tools that build, train, export and evaluate the project's small default model.

Modules: dataset (procedural captioned pictures), bpe (CLIP-style BPE learned from the captions),
models (VAE, text encoder and UNet with SD 1.x single-file names), safetensors_io, train, export,
evaluate. Python 3 with Debian's python3-torch and python3-numpy only.
"""
