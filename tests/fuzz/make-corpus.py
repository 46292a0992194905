#!/usr/bin/python3
"""make-corpus.py - writes the fuzzers' seed corpora (tests/fuzz/corpus/HARNESS/) and the
reproducers of the defects found so far (tests/fuzz/crashes/HARNESS/) from the reference data.

    /usr/bin/python3 tests/fuzz/make-corpus.py [REFERENCE_DIR]

REFERENCE_DIR defaults to ../shared/reference beside the project. Standard library only; the output
is committed (small files), so CI never runs this.
"""
import json
import os
import shutil
import struct
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
REF = sys.argv[1] if len(sys.argv) > 1 else os.path.join(ROOT, '..', 'shared', 'reference')
DTYPE_SIZE = {'F32': 4, 'F16': 2, 'BF16': 2, 'F64': 8, 'I64': 8, 'I32': 4, 'I16': 2, 'I8': 1,
              'U8': 1, 'BOOL': 1}


def read_st(path):
    with open(path, 'rb') as f:
        blob = f.read()
    n = struct.unpack('<Q', blob[:8])[0]
    return blob[8:8 + n], json.loads(blob[8:8 + n]), blob[8 + n:]


def st_bytes(tensors, metadata=None):
    """tensors: list of (name, dtype, shape, data bytes) -> a safetensors file."""
    hdr, off, data = {}, 0, b''
    if metadata:
        hdr['__metadata__'] = metadata
    for name, dt, shape, raw in tensors:
        hdr[name] = {'dtype': dt, 'shape': shape, 'data_offsets': [off, off + len(raw)]}
        off += len(raw)
        data += raw
    h = json.dumps(hdr, separators=(',', ':')).encode()
    h += b' ' * (-len(h) % 8)
    return struct.pack('<Q', len(h)) + h + data


def put(harness, kind, name, data):
    d = os.path.join(HERE, kind, harness)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, name), 'wb') as f:
        f.write(data)


def safetensors_seeds():
    golden = os.path.join(REF, 'golden')
    for fn in sorted(os.listdir(golden)):
        if not fn.endswith('.safetensors'):
            continue
        _, hdr, data = read_st(os.path.join(golden, fn))
        small = []
        for name, t in hdr.items():
            if name == '__metadata__':
                continue
            b, e = t['data_offsets']
            if e - b <= 512:
                small.append((name, t['dtype'], t['shape'], data[b:e]))
            if len(small) == 12:
                break
        meta = {k: v[:200] for k, v in list(hdr.get('__metadata__', {}).items())[:3]}
        put('fuzz_safetensors', 'corpus', fn.replace('.safetensors', '.st'), st_bytes(small, meta))
    every = [('t_' + dt.lower(), dt, [2, 3], bytes(range(1, 1 + 6 * size)))
             for dt, size in DTYPE_SIZE.items()]
    every.append(('scalar', 'F32', [], struct.pack('<f', 1.5)))
    every.append(('empty', 'F16', [0, 4], b''))
    put('fuzz_safetensors', 'corpus', 'every-dtype.st',
        st_bytes(every, {'sdg.native_size': '64', 'sdg.scale_factor': '0.5'}))
    put('fuzz_safetensors', 'corpus', 'empty-header.st', struct.pack('<Q', 2) + b'{}')


def model_seeds():
    raw_hdr, hdr, _ = read_st(os.path.join(REF, 'golden', 'tiny-sd1.safetensors'))
    names = [k for k in hdr if k != '__metadata__']   # st_at order: the header's order
    idx = {n: i for i, n in enumerate(names)}
    put('fuzz_model', 'corpus', 'raw-header', b'\x00' + raw_hdr)

    def edit(op, name, v):
        i = idx[name]
        return bytes([op, i & 255, i >> 8, v])

    # Structured mode: 0 = set dim (v >> 4) to DIM_VALUES[v & 15] (fuzz_model.c).
    dims = [0, 1, 2, 3, 4, 5, 7, 8, 9, 16, 31, 32, 63, 64, 77, 78]
    put('fuzz_model', 'corpus', 'unchanged', b'\x01')
    # The first byte's top bits pick the base model (0 tiny-sd1, 1 tiny-sd2, 2 tiny-sdxl).
    put('fuzz_model', 'corpus', 'unchanged-sd2', b'\x21')
    put('fuzz_model', 'corpus', 'unchanged-sdxl', b'\x41')
    put('fuzz_model', 'corpus', 'f16-unet-conv', b'\x01' +
        edit(4, 'model.diffusion_model.input_blocks.0.0.weight', 1))
    put('fuzz_model', 'corpus', 'nan-vae-conv', b'\x01' +
        edit(7, 'first_stage_model.decoder.conv_in.weight', 0))
    # The three defects the trust issue found by hand: each loaded, then overran a buffer.
    clip = 'cond_stage_model.transformer.text_model.embeddings.position_embedding.weight'
    put('fuzz_model', 'crashes', 'clip-78-positions', b'\x01' + edit(0, clip, dims.index(78)))
    put('fuzz_model', 'crashes', 'vae-conv-out-4-channels', b'\x01' +
        edit(0, 'first_stage_model.decoder.conv_out.weight', dims.index(4)) +
        edit(0, 'first_stage_model.decoder.conv_out.bias', dims.index(4)))
    put('fuzz_model', 'crashes', 'vae-conv-in-4-channels', b'\x01' +
        edit(0, 'first_stage_model.encoder.conv_in.weight', 0x10 | dims.index(4)))


def vocab_seeds():
    import gzip
    with gzip.open(os.path.join(REF, 'vocab', 'bpe_simple_vocab_16e6.txt.gz'), 'rb') as f:
        lines = f.read().split(b'\n')
    put('fuzz_vocab', 'corpus', 'openai-300', b'\x00' + b'\n'.join(lines[:301]) + b'\n')
    models = os.path.join(ROOT, 'models')
    with open(os.path.join(models, 'vocab.json'), 'rb') as f:
        vj = f.read()
    with open(os.path.join(models, 'merges.txt'), 'rb') as f:
        mg = f.read()
    put('fuzz_vocab', 'corpus', 'hf-default-model', b'\x01' + vj + b'\x00' + mg)


def prompt_seeds():
    prompts = [
        b'a photograph of an astronaut riding a horse',
        b'a (red:1.3) circle, ((blue)) [square] (unclosed [nested (deep:0.5)]',
        b'\\(literal\\) \\[x\\] \\\\ lone \\ backslash (a:nan) (b:1e999) (c:-1)',
        b'first window BREAK second window BREAK',
        b', '.join([b'word'] * 60) + b', tail (after:1.2) ' + b'x ' * 80,
        'caf\u00e9 \u65e5\u672c\u8a9e \U0001F600 \ufb01 \u201cquotes\u201d &amp; &lt;b&gt;'.encode(),
        b'bad utf8 \xff\xfe \xc3(',
        b'',
    ]
    for i, p in enumerate(prompts):
        put('fuzz_prompt', 'corpus', 'prompt-%d' % i, bytes([i % 5]) + p)


def embedding_seeds():
    """Small embeddings of every accepted form, and a few just outside it (fuzz_embedding.c)."""
    def f32(n, scale=0.01):
        return struct.pack('<%df' % n, *[scale * ((i % 13) - 6) for i in range(n)])

    def f16(n):
        return struct.pack('<%de' % n, *[0.01 * ((i % 13) - 6) for i in range(n)])

    seeds = {
        'sd1-emb-params': [('emb_params', 'F32', [2, 768], f32(2 * 768))],
        'sd1-one-vector': [('string_to_param.*', 'F16', [768], f16(768))],
        'sd2-bf16': [('emb_params', 'BF16', [1, 1024], f16(1024))],
        'sdxl-pair': [('clip_g', 'F16', [2, 1280], f16(2 * 1280)),
                      ('clip_l', 'F16', [2, 768], f16(2 * 768))],
        'tiny-75-vectors': [('emb_params', 'F32', [75, 4], f32(75 * 4))],
        'tiny-76-vectors': [('emb_params', 'F32', [76, 4], f32(76 * 4))],
        'zero-vectors': [('emb_params', 'F32', [0, 8], b'')],
        'nan': [('emb_params', 'F32', [1, 4], struct.pack('<4f', 1, float('nan'), 2, 3))],
        'two-tensors': [('a', 'F32', [1, 4], f32(4)), ('b', 'F32', [1, 4], f32(4))],
        'pair-unequal': [('clip_g', 'F32', [2, 8], f32(16)), ('clip_l', 'F32', [3, 4], f32(12))],
        'ints': [('emb_params', 'I32', [1, 4], struct.pack('<4i', 1, 2, 3, 4))],
    }
    for name, tensors in seeds.items():
        put('fuzz_embedding', 'corpus', name, st_bytes(tensors))


def lora_seeds():
    """Cut-downs of the golden LoRA in both forms, LyCORIS modules for tiny-sd1, an SD2 one,
    and prompts with tags (fuzz_lora.c: first byte 0 = tiny-sd1, 1 = tiny-sd2, 'P' = a prompt)."""
    golden = os.path.join(REF, 'golden')

    def subset(fn, keep):
        _, hdr, data = read_st(os.path.join(golden, fn))
        out = []
        for name, t in hdr.items():
            if name != '__metadata__' and any(k in name for k in keep):
                b, e = t['data_offsets']
                out.append((name, t['dtype'], t['shape'], data[b:e]))
        return st_bytes(out, hdr.get('__metadata__'))

    put('fuzz_lora', 'corpus', 'kohya-subset',
        b'\0' + subset('tiny-sd1-lora.safetensors',
                        ['encoder_layers_0_self_attn_q_proj', 'mid_block_resnets_0_conv1',
                         'down_blocks_0_attentions_0_proj_in']))
    put('fuzz_lora', 'corpus', 'peft-subset',
        b'\0' + subset('tiny-sd1-lora-peft.safetensors',
                        ['layers.0.self_attn.q_proj', 'mid_block.resnets.0.conv1',
                         'down_blocks.0.attentions.0.proj_in']))

    def f32(n, scale=0.01):
        return struct.pack('<%df' % n, *[scale * ((i % 11) - 5) for i in range(n)])

    q = 'lora_unet_mid_block_attentions_0_transformer_blocks_0_attn1_to_q'
    conv = 'lora_unet_mid_block_resnets_0_conv1'
    alpha = struct.pack('<f', 1.0)
    seeds = {
        'loha': [(q + '.hada_w1_a', [64, 2]), (q + '.hada_w1_b', [2, 64]),
                 (q + '.hada_w2_a', [64, 2]), (q + '.hada_w2_b', [2, 64])],
        'loha-tucker': [(conv + '.hada_w1_a', [2, 64]), (conv + '.hada_w1_b', [2, 64]),
                        (conv + '.hada_w2_a', [2, 64]), (conv + '.hada_w2_b', [2, 64]),
                        (conv + '.hada_t1', [2, 2, 3, 3]), (conv + '.hada_t2', [2, 2, 3, 3])],
        'lokr': [(q + '.lokr_w1', [4, 8]), (q + '.lokr_w2_a', [16, 2]),
                 (q + '.lokr_w2_b', [2, 8])],
        'lokr-conv': [(conv + '.lokr_w1', [8, 4]), (conv + '.lokr_w2', [8, 16, 3, 3])],
        'locon-mid': [(conv + '.lora_up.weight', [64, 2, 1, 1]),
                      (conv + '.lora_mid.weight', [2, 2, 3, 3]),
                      (conv + '.lora_down.weight', [2, 64, 1, 1])],
        'dora': [(q + '.lora_up.weight', [64, 2]), (q + '.lora_down.weight', [2, 64]),
                 (q + '.dora_scale', [1, 64])],
    }
    for name, tensors in seeds.items():
        ts = [(n, 'F32', shape, f32(int.__mul__(*shape[:2]) * (shape[2] * shape[3] if len(shape) == 4 else 1)))
              for n, shape in tensors]
        ts.append((tensors[0][0].rsplit('.', 2 if 'lora_' in tensors[0][0] else 1)[0] + '.alpha', 'F32', [], alpha))
        put('fuzz_lora', 'corpus', name, b'\0' + st_bytes(ts))
    te = 'lora_te_text_model_encoder_layers_0_self_attn_k_proj'
    put('fuzz_lora', 'corpus', 'sd2-openclip-slice',
        b'\1' + st_bytes([(te + '.lora_up.weight', 'F16', [48, 4], struct.pack('<192e', *[0.01] * 192)),
                           (te + '.lora_down.weight', 'F32', [4, 48], f32(192)),
                           (te + '.alpha', 'F32', [], alpha)]))
    for i, p in enumerate([b'a cat <lora:style:0.8> in snow', b'<lora:a><lyco:b:-1.5>x',
                           b'<lora:>', b'<lora:x:1:2>', b'<lora:unclosed',
                           b'<lo<lora:a>ra:b> taking a tag out joins another']):
        put('fuzz_lora', 'corpus', 'prompt-%d' % i, b'P' + p)


if __name__ == '__main__':
    for kind in ('corpus',):
        shutil.rmtree(os.path.join(HERE, kind), ignore_errors=True)
    safetensors_seeds()
    model_seeds()
    vocab_seeds()
    prompt_seeds()
    embedding_seeds()
    lora_seeds()
