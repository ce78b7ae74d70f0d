// PCT-Net's pixel-wise colour transforms against ../shared/conformance/pctnet/transforms.* (every official
// transform type, raw / clamped / normalised, and the gradients of param and input), and its bicubic upsampling.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { assertClose, conformanceDir, testIf } from './helpers.ts';
import { backward } from '../src/engine/autograd.ts';
import { Tensor, tidy } from '../src/engine/tensor.ts';
import { loadSafetensors } from '../src/io/safetensors.ts';
import { clamp, mul } from '../src/kernels/elementwise.ts';
import { sum } from '../src/kernels/reduce.ts';
import { interpolate } from '../src/kernels/resample.ts';
import { PCTNet, type PctTransformType, maskWeightedMse, pct, pctTransform } from '../src/models/pct_net.ts';
import { conformance } from './helpers.ts';

const fs = process.getBuiltinModule('node:fs');
const dir = `${conformanceDir}/pctnet`;
const have = fs.existsSync(`${dir}/transforms.safetensors`);
const vectorTest = testIf(have, `no ${dir}`);
const tol = 1e-5;

vectorTest('every transform: raw, clamped, normalised, and the gradients of parameters and input', async () => {
  const meta = JSON.parse(fs.readFileSync(`${dir}/transforms.json`, 'utf8')) as { normalisation: { mean: number[]; std: number[] }; cases: { name: string; transform_type: PctTransformType; affine: boolean }[] };
  const r = loadSafetensors(`${dir}/transforms.safetensors`);
  assert.ok(meta.cases.length >= 8);
  for (const c of meta.cases) {
    const x = r.get(`${c.name}.input`).requireGrad();
    const p = r.get(`${c.name}.param`).requireGrad();
    const raw = pctTransform(x, p, c.transform_type, c.affine);
    assertClose(await raw.toArray(), r.readArray(`${c.name}.raw`).data, tol, `${c.name} raw`);
    const clamped = clamp(raw, 0, 1);
    assertClose(await clamped.toArray(), r.readArray(`${c.name}.clamp`).data, tol, `${c.name} clamp`);
    const out = pct(x, p, { type: c.transform_type, affine: c.affine, normalization: meta.normalisation });
    assertClose(await out.toArray(), r.readArray(`${c.name}.out`).data, tol, `${c.name} out`);
    const g = r.get(`${c.name}.grad_out`);
    const loss = tidy(() => sum(mul(out, g)));
    backward(loss);
    assertClose(await p.grad!.toArray(), r.readArray(`${c.name}.grad.param`).data, tol, `${c.name} grad param`);
    // identity ignores its input: no gradient reaches it (the reference's is zeros)
    const gradInput = x.grad ? await x.grad.toArray() : new Float32Array(x.size);
    assertClose(gradInput, r.readArray(`${c.name}.grad.input`).data, tol, `${c.name} grad input`);
    for (const t of [x, p, raw, clamped, out, g, loss]) t.dispose();
  }
  r.close();
});

vectorTest('bicubic upsampling (the full-resolution parameters): align corners false and true, and a downscale', async () => {
  const r = loadSafetensors(`${dir}/transforms.safetensors`);
  const x = r.get('bicubic.input');
  for (const alignCorners of [false, true]) {
    const y = interpolate(x, { mode: 'bicubic', size: [11, 7], alignCorners });
    assertClose(await y.toArray(), r.readArray(`bicubic.align_corners_${alignCorners}`).data, tol, `bicubic align_corners ${alignCorners}`);
    y.dispose();
  }
  const d = r.get('bicubic_down.input');
  const yd = interpolate(d, { mode: 'bicubic', size: [4, 7] });
  assertClose(await yd.toArray(), r.readArray('bicubic_down.align_corners_false').data, tol, 'bicubic down');
  for (const t of [x, d, yd]) t.dispose();
  r.close();
});

vectorTest('the CNN network: every intermediate, attention, params, low and full resolution outputs', async () => {
  const io = conformance('pctnet');
  const net = PCTNet.fromPretrained(dir);
  const [image, imageFull, mask] = ['image_lowres', 'image_fullres', 'mask_lowres'].map((k) => io.get(k)) as [Tensor, Tensor, Tensor];
  const captured = new Map<string, Float32Array>();
  const pending: Promise<void>[] = [];
  const out = net.forward(image, imageFull, mask, undefined, { capture: (name, t) => {
    // the stored intermediates are sample 0's
    if (io.has(`inter.${name}`)) pending.push(t.toArray().then((a) => void captured.set(name, Float32Array.from(a).subarray(0, t.size / t.shape[0]!))));
  } });
  await Promise.all(pending);
  const inter = [...io.keys()].filter((k) => k.startsWith('inter.'));
  assert.is(inter.length, 9);
  for (const k of inter) {
    assert.ok(captured.has(k.slice(6)), `${k} captured`);
    assertClose(captured.get(k.slice(6))!, io.readArray(k).data, 2e-4, k);
  }
  for (const [k, t] of [['attention', out.attention], ['params', out.params], ['images', out.images], ['params_fullres', out.paramsFullres], ['images_fullres', out.imagesFullres]] as const) {
    assertClose(await t.toArray(), io.readArray(k).data, 2e-4, k);
  }
  for (const t of [image, imageFull, mask, out.attention, out.params, out.images, out.paramsFullres, out.imagesFullres]) t.dispose();
  net.dispose();
  io.close();
});

vectorTest('a training step: train-mode BatchNorm, MaskWeightedMSE, the gradients and the running statistics', async () => {
  const io = conformance('pctnet');
  const net = PCTNet.fromPretrained(dir).train().requireGrad();
  const norm = (k: string) => {
    const t = io.readArray(k);
    const [B, C, H, W] = t.shape as [number, number, number, number];
    const m = [0.485, 0.456, 0.406], s = [0.229, 0.224, 0.225];
    return Tensor.fromArray(Float32Array.from(t.data, (v, i) => (v - m[Math.floor(i / (H * W)) % C]!) / s[Math.floor(i / (H * W)) % C]!), [B, C, H, W]);
  };
  const [image, imageFull, target] = [norm('train.composite_lowres_rgb'), norm('train.composite_rgb'), norm('train.target_rgb')];
  const [maskLow, mask] = [io.get('train.mask_lowres'), io.get('train.mask')];
  const out = net.forward(image, imageFull, maskLow, mask);
  assertClose(await out.params.toArray(), io.readArray('train.params').data, 2e-4, 'train.params');
  assertClose(await out.imagesFullres.toArray(), io.readArray('train.images_fullres').data, 2e-4, 'train.images_fullres');
  const loss = maskWeightedMse(out.imagesFullres, target, mask);
  assertClose([await loss.item()], io.readArray('train.loss').data, 1e-4, 'train.loss');
  backward(loss);
  const params = new Map(net.namedParameters());
  const grads = [...io.keys()].filter((k) => k.startsWith('train.grad.'));
  assert.is(grads.length, 17);
  for (const k of grads) {
    const ref = io.readArray(k).data;
    const g = await params.get(k.slice('train.grad.'.length))!.grad!.toArray();
    const scale = Math.max(...Array.from(ref, Math.abs));
    g.forEach((v, i) => assert.ok(Math.abs(v - ref[i]!) <= 1e-3 * scale, `${k}[${i}]: ${v} vs ${ref[i]}`));
  }
  const buffers = new Map(net.namedBuffers());
  for (const k of [...io.keys()].filter((n) => n.startsWith('train.running_'))) {
    const [, kind, ...rest] = k.split('.');
    assertClose(await buffers.get(`${rest.join('.')}.${kind}`)!.toArray(), io.readArray(k).data, 1e-4, k);
  }
  net.zeroGrad();
  for (const t of [image, imageFull, target, maskLow, mask, loss, out.attention, out.params, out.images, out.paramsFullres, out.imagesFullres]) t.dispose();
  net.dispose();
  io.close();
});

vectorTest('the ViT variant (libcom\'s PCTNet): patch embedding, encoder layers, outputs; libcom\'s full resolution and its wrapper', async () => {
  const io = loadSafetensors(`${dir}/vit/io.safetensors`);
  const net = PCTNet.fromPretrained(`${dir}/vit`);
  assert.is(net.config.backbone, 'ViT');
  const [image, imageFull, mask, maskFull] = ['composite_lowres_rgb', 'composite_rgb', 'mask_lowres', 'mask'].map((k) => io.get(k)) as [Tensor, Tensor, Tensor, Tensor];
  const captured = new Map<string, Float32Array>();
  const pending: Promise<void>[] = [];
  const out = net.forward(image, imageFull, mask, maskFull, { capture: (name, t) => {
    if (!io.has(name) && !io.has(`inter.${name}`)) return;
    pending.push(t.toArray().then((a) => {
      const v = Float32Array.from(a);
      if (name.includes('transformer_enc')) {
        // sequence-first [L, B, D]: sample 0 of every position
        const [L, B, D] = t.shape as [number, number, number];
        captured.set(name, Float32Array.from({ length: L * D }, (_, i) => v[Math.floor(i / D) * B * D + (i % D)]!));
      } else captured.set(name, name === 'encoder_output' ? v : v.subarray(0, t.size / t.shape[0]!));
    }));
  } });
  await Promise.all(pending);
  for (const k of ['inter.encoder.patch_to_embedding', 'inter.encoder.transformer_enc.layers.0', 'inter.encoder.transformer_enc.layers.4', 'inter.encoder.transformer_enc.layers.8', 'encoder_output']) {
    const name = k.replace(/^inter\./, '');
    assert.ok(captured.has(name), `${k} captured`);
    assertClose(captured.get(name)!, io.readArray(k).data, 1e-4, k);
  }
  for (const [k, t] of [['params', out.params], ['images', out.images], ['params_fullres', out.paramsFullres], ['images_fullres', out.imagesFullres]] as const) assertClose(await t.toArray(), io.readArray(k).data, 1e-4, k);
  const libcom = net.forward(image, imageFull, mask, maskFull, { alignCorners: true });
  assertClose(await libcom.paramsFullres.toArray(), io.readArray('libcom.params_fullres').data, 1e-4, 'libcom.params_fullres');
  assertClose(await libcom.imagesFullres.toArray(), io.readArray('libcom.images_fullres').data, 1e-4, 'libcom.images_fullres');
  // libcom's wrapper: the model on cv2's 256² bytes and the full image, output = clamp(255·out) as BGR
  const bgr = io.readArray('wrapper.composite_bgr'), m8 = io.readArray('wrapper.mask'), lr = io.readArray('wrapper.img_lr');
  const [H, W] = bgr.shape as [number, number];
  const planes = (hw: number, at: (q: number, c: number) => number) => Float32Array.from({ length: 3 * hw }, (_, i) => Math.fround(at(i % hw, Math.floor(i / hw)) / 255));
  const full = Tensor.fromArray(planes(H * W, (q, c) => bgr.data[3 * q + 2 - c]!), [1, 3, H, W]);
  const low = Tensor.fromArray(planes(65536, (q, c) => lr.data[3 * q + c]!), [1, 3, 256, 256]);
  const maskLr = Tensor.fromArray(Float32Array.from(io.readArray('wrapper.mask_lr').data), [1, 1, 256, 256]);
  const maskHr = Tensor.fromArray(Float32Array.from(m8.data, (v) => Math.fround(v / 255)), [1, 1, H, W]);
  const w = net.forward(low, full, maskLr, maskHr, { alignCorners: true });
  const v = await w.imagesFullres.toArray();
  const ref = io.readArray('wrapper.output_bgr').data;
  for (let q = 0; q < H * W; q++) for (let c = 0; c < 3; c++) assert.ok(Math.abs(Math.min(255, Math.max(0, 255 * v[(2 - c) * H * W + q]!)) - ref[3 * q + c]!) <= 2e-2, `wrapper pixel ${q} channel ${c}`);
  net.dispose();
  io.close();
});

test('parameter shapes are checked, naming the transform', () => {
  const x = Tensor.zeros([1, 3, 2, 2]);
  assert.throws(() => pctTransform(x, Tensor.zeros([1, 9, 2, 2]), 'linear', true), /linear \(affine\) needs parameters \[1, 12, 2, 2\], got \[1, 9, 2, 2\]/);
  assert.throws(() => pctTransform(Tensor.zeros([1, 4, 2, 2]), x, 'add'), /x has shape \[1, 4, 2, 2\], expected \[B, 3, H, W\]/);
});

test.run();
