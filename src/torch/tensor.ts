// The Tensor: a handle on a libtorch tensor living in the addon's handle table, with PyTorch's
// op names (camelCase) and semantics. Lifetimes are explicit (src/torch/scope.ts): a new tensor
// joins the innermost `tidy` scope, `dispose()` frees it.
import { native } from "./native.ts";
import { type DType, type Device, SCALAR_TYPE, dtypeFromCode } from "./dtype.ts";
import { tidy, track, untrack } from "./scope.ts";

export type Shape = number[];
export type Scalar = number;
export type TensorLike = Tensor | number;
export type NestedArray = number | boolean | NestedArray[];


export const REDUCTION = { none: 0, mean: 1, sum: 2 } as const;
export type Reduction = keyof typeof REDUCTION;

export class Tensor {
  #id: number;
  #shape: Shape | undefined;
  #dtype: DType | undefined;

  /** Wraps an id the addon returned; the new tensor joins the innermost `tidy` scope. */
  constructor(id: number) {
    this.#id = id;
    track(this, id);
  }

  /** The handle-table id; throws once disposed. */
  get id(): number {
    if (this.#id < 0) throw disposedError(this.#shape, this.#dtype);
    return this.#id;
  }

  get isDisposed(): boolean {
    return this.#id < 0;
  }

  dispose(): void {
    if (this.#id < 0) return;
    native.dispose(this.#id);
    untrack(this);
    this.#id = -1;
  }

  // --- metadata ---------------------------------------------------------------------------

  get shape(): Shape {
    return (this.#shape ??= native.shape(this.id));
  }
  get dtype(): DType {
    return (this.#dtype ??= dtypeFromCode(native.dtype(this.id)));
  }
  get device(): string {
    return native.device(this.id);
  }
  get ndim(): number {
    return this.shape.length;
  }
  get numel(): number {
    return this.shape.reduce((a, b) => a * b, 1);
  }
  size(dim: number): number {
    return this.shape[normDim(dim, this.ndim)]!;
  }
  isContiguous(): boolean {
    return native.is_contiguous(this.id);
  }
  toString(): string {
    return `Tensor([${this.shape.join(", ")}], ${this.dtype}, ${this.device})`;
  }

  // --- data out ---------------------------------------------------------------------------

  /** The elements as a flat typed array (float16/bfloat16 come back as float32). */
  data(): Float32Array | Float64Array | BigInt64Array | Int32Array | Int16Array | Int8Array | Uint8Array {
    const dtype = this.dtype;
    if (dtype === "float16" || dtype === "bfloat16") return tidy(() => this.to("float32").data());
    const buffer = native.to_buffer(this.id);
    switch (dtype) {
      case "float32":
        return new Float32Array(buffer);
      case "float64":
        return new Float64Array(buffer);
      case "int64":
        return new BigInt64Array(buffer);
      case "int32":
        return new Int32Array(buffer);
      case "int16":
        return new Int16Array(buffer);
      case "int8":
        return new Int8Array(buffer);
      default:
        return new Uint8Array(buffer);
    }
  }

  /** The raw bytes in this tensor's own dtype, contiguous (for file formats). */
  bytes(): Uint8Array {
    return new Uint8Array(native.to_buffer(this.id));
  }

  /** The elements as JS numbers, flat. */
  toFlatArray(): number[] {
    const data = this.data();
    return Array.from(data as ArrayLike<number | bigint>, Number);
  }

  /** The elements as nested JS arrays (a number for a 0-d tensor; booleans for bool). */
  toArray(): NestedArray {
    const flat = this.toFlatArray();
    const values: NestedArray[] = this.dtype === "bool" ? flat.map((v) => v !== 0) : flat;
    const shape = this.shape;
    if (shape.length === 0) return values[0]!;
    const build = (dim: number, offset: number): NestedArray[] => {
      const out: NestedArray[] = [];
      const stride = shape.slice(dim + 1).reduce((a, b) => a * b, 1);
      for (let i = 0; i < shape[dim]!; i++) {
        out.push(dim === shape.length - 1 ? values[offset + i]! : build(dim + 1, offset + i * stride));
      }
      return out;
    };
    return build(0, 0);
  }

  /** The value of a one-element tensor. */
  item(): number {
    if (this.numel !== 1) throw new Error(`item(): tensor of shape [${this.shape}] has ${this.numel} elements, not 1`);
    return native.item(this.id);
  }

  // --- conversion -------------------------------------------------------------------------

  to(target: DType | Device | string): Tensor {
    if (Object.hasOwn(SCALAR_TYPE, target)) return new Tensor(native.to_dtype(this.id, SCALAR_TYPE[target as DType]));
    return new Tensor(native.to_device(this.id, target));
  }
  float(): Tensor {
    return this.to("float32");
  }
  long(): Tensor {
    return this.to("int64");
  }
  clone(): Tensor {
    return new Tensor(native.clone(this.id));
  }
  contiguous(): Tensor {
    return new Tensor(native.contiguous(this.id));
  }

  // --- autograd ---------------------------------------------------------------------------

  get requiresGrad(): boolean {
    return native.requires_grad(this.id);
  }
  set requiresGrad(value: boolean) {
    native.requires_grad_(this.id, value);
  }
  requiresGrad_(value = true): this {
    native.requires_grad_(this.id, value);
    return this;
  }
  get isLeaf(): boolean {
    return native.is_leaf(this.id);
  }
  /** The accumulated gradient (a new handle each call), or null. */
  get grad(): Tensor | null {
    const id = native.grad(this.id);
    return id === null ? null : new Tensor(id);
  }
  set grad(value: Tensor | null) {
    native.set_grad(this.id, value === null ? null : value.id);
  }
  backward(gradient?: Tensor, options: { retainGraph?: boolean } = {}): void {
    native.backward(this.id, gradient ? gradient.id : null, options.retainGraph ?? false);
  }
  detach(): Tensor {
    return new Tensor(native.detach(this.id));
  }

  // --- views and layout -------------------------------------------------------------------

  view(...shape: Shape | [Shape]): Tensor {
    return new Tensor(native.view(this.id, flatShape(shape)));
  }
  reshape(...shape: Shape | [Shape]): Tensor {
    return new Tensor(native.reshape(this.id, flatShape(shape)));
  }
  permute(...dims: Shape | [Shape]): Tensor {
    return new Tensor(native.permute(this.id, flatShape(dims)));
  }
  transpose(dim0: number, dim1: number): Tensor {
    return new Tensor(native.transpose(this.id, dim0, dim1));
  }
  /** Transpose of a 2-d tensor. */
  t(): Tensor {
    return this.transpose(0, 1);
  }
  expand(...shape: Shape | [Shape]): Tensor {
    return new Tensor(native.expand(this.id, flatShape(shape)));
  }
  unsqueeze(dim: number): Tensor {
    return new Tensor(native.unsqueeze(this.id, dim));
  }
  squeeze(dim?: number): Tensor {
    return new Tensor(dim === undefined ? native.squeeze(this.id) : native.squeeze_dim(this.id, dim));
  }
  narrow(dim: number, start: number, length: number): Tensor {
    return new Tensor(native.narrow(this.id, dim, start, length));
  }
  /** Python's `x[..., start:end:step]` along `dim`; negative and open ends as in Python. */
  slice(dim: number, start = 0, end = Number.MAX_SAFE_INTEGER, step = 1): Tensor {
    return new Tensor(native.slice(this.id, dim, start, end, step));
  }
  select(dim: number, index: number): Tensor {
    return new Tensor(native.select(this.id, dim, index));
  }
  flatten(startDim = 0, endDim = -1): Tensor {
    return new Tensor(native.flatten(this.id, startDim, endDim));
  }
  repeat(...repeats: Shape | [Shape]): Tensor {
    return new Tensor(native.repeat(this.id, flatShape(repeats)));
  }
  repeatInterleave(repeats: number, dim: number): Tensor {
    return new Tensor(native.repeat_interleave(this.id, repeats, dim));
  }
  split(splitSize: number | number[], dim = 0): Tensor[] {
    const ids = Array.isArray(splitSize)
      ? native.split_with_sizes(this.id, splitSize, dim)
      : native.split(this.id, splitSize, dim);
    return ids.map((id) => new Tensor(id));
  }
  chunk(chunks: number, dim = 0): Tensor[] {
    return native.chunk(this.id, chunks, dim).map((id) => new Tensor(id));
  }
  tril(diagonal = 0): Tensor {
    return new Tensor(native.tril(this.id, diagonal));
  }
  triu(diagonal = 0): Tensor {
    return new Tensor(native.triu(this.id, diagonal));
  }
  flip(...dims: Shape | [Shape]): Tensor {
    return new Tensor(native.flip(this.id, flatShape(dims)));
  }
  /** Rotates elements along `dim` by `shift` places (torch.roll). */
  roll(shift: number, dim: number): Tensor {
    return new Tensor(native.roll(this.id, [shift], [dim]));
  }

  // --- indexing ---------------------------------------------------------------------------

  indexSelect(dim: number, index: Tensor): Tensor {
    return new Tensor(native.index_select(this.id, dim, index.id));
  }
  gather(dim: number, index: Tensor): Tensor {
    return new Tensor(native.gather(this.id, dim, index.id));
  }
  scatter(dim: number, index: Tensor, src: TensorLike): Tensor {
    return new Tensor(
      typeof src === "number"
        ? native.scatter_value(this.id, dim, index.id, src)
        : native.scatter(this.id, dim, index.id, src.id),
    );
  }
  scatterAdd(dim: number, index: Tensor, src: Tensor): Tensor {
    return new Tensor(native.scatter_add(this.id, dim, index.id, src.id));
  }
  indexCopy(dim: number, index: Tensor, source: Tensor): Tensor {
    return new Tensor(native.index_copy(this.id, dim, index.id, source.id));
  }
  maskedFill(mask: Tensor, value: number): Tensor {
    return new Tensor(native.masked_fill(this.id, mask.id, value));
  }
  maskedSelect(mask: Tensor): Tensor {
    return new Tensor(native.masked_select(this.id, mask.id));
  }
  nonzero(): Tensor {
    return new Tensor(native.nonzero(this.id));
  }

  // --- elementwise ------------------------------------------------------------------------

  add(other: TensorLike, alpha = 1): Tensor {
    if (typeof other === "number") return new Tensor(native.add_scalar(this.id, other * alpha));
    return new Tensor(native.add(this.id, other.id, alpha));
  }
  sub(other: TensorLike, alpha = 1): Tensor {
    if (typeof other === "number") return new Tensor(native.add_scalar(this.id, -other * alpha));
    return new Tensor(native.sub(this.id, other.id, alpha));
  }
  /** `other - this` for a number `other`. */
  rsub(other: number): Tensor {
    return new Tensor(native.rsub_scalar(this.id, other));
  }
  mul(other: TensorLike): Tensor {
    if (typeof other === "number") return new Tensor(native.mul_scalar(this.id, other));
    return new Tensor(native.mul(this.id, other.id));
  }
  div(other: TensorLike): Tensor {
    if (typeof other === "number") return new Tensor(native.div_scalar(this.id, other));
    return new Tensor(native.div(this.id, other.id));
  }
  pow(exponent: TensorLike): Tensor {
    if (typeof exponent === "number") return new Tensor(native.pow(this.id, exponent));
    return new Tensor(native.pow_tensor(this.id, exponent.id));
  }
  neg(): Tensor {
    return new Tensor(native.neg(this.id));
  }
  abs(): Tensor {
    return new Tensor(native.abs(this.id));
  }
  sign(): Tensor {
    return new Tensor(native.sign(this.id));
  }
  exp(): Tensor {
    return new Tensor(native.exp(this.id));
  }
  log(): Tensor {
    return new Tensor(native.log(this.id));
  }
  log1p(): Tensor {
    return new Tensor(native.log1p(this.id));
  }
  sqrt(): Tensor {
    return new Tensor(native.sqrt(this.id));
  }
  rsqrt(): Tensor {
    return new Tensor(native.rsqrt(this.id));
  }
  reciprocal(): Tensor {
    return new Tensor(native.reciprocal(this.id));
  }
  square(): Tensor {
    return new Tensor(native.square(this.id));
  }
  sin(): Tensor {
    return new Tensor(native.sin(this.id));
  }
  cos(): Tensor {
    return new Tensor(native.cos(this.id));
  }
  floor(): Tensor {
    return new Tensor(native.floor(this.id));
  }
  round(): Tensor {
    return new Tensor(native.round(this.id));
  }
  silu(): Tensor {
    return new Tensor(native.silu(this.id));
  }
  gelu(approximate: "none" | "tanh" = "none"): Tensor {
    return new Tensor(native.gelu(this.id, approximate));
  }
  relu(): Tensor {
    return new Tensor(native.relu(this.id));
  }
  sigmoid(): Tensor {
    return new Tensor(native.sigmoid(this.id));
  }
  logSigmoid(): Tensor {
    return new Tensor(native.log_sigmoid(this.id));
  }
  softplus(): Tensor {
    return new Tensor(native.softplus(this.id));
  }
  tanh(): Tensor {
    return new Tensor(native.tanh(this.id));
  }
  erf(): Tensor {
    return new Tensor(native.erf(this.id));
  }
  clamp(min: number | null, max: number | null = null): Tensor {
    return new Tensor(native.clamp(this.id, min, max));
  }
  maximum(other: Tensor): Tensor {
    return new Tensor(native.maximum(this.id, other.id));
  }
  minimum(other: Tensor): Tensor {
    return new Tensor(native.minimum(this.id, other.id));
  }
  lerp(end: Tensor, weight: number): Tensor {
    return new Tensor(native.lerp(this.id, end.id, weight));
  }

  // --- comparisons and logic --------------------------------------------------------------

  eq(other: TensorLike): Tensor {
    return new Tensor(typeof other === "number" ? native.eq_scalar(this.id, other) : native.eq(this.id, other.id));
  }
  ne(other: TensorLike): Tensor {
    return new Tensor(typeof other === "number" ? native.ne_scalar(this.id, other) : native.ne(this.id, other.id));
  }
  lt(other: TensorLike): Tensor {
    return new Tensor(typeof other === "number" ? native.lt_scalar(this.id, other) : native.lt(this.id, other.id));
  }
  le(other: TensorLike): Tensor {
    return new Tensor(typeof other === "number" ? native.le_scalar(this.id, other) : native.le(this.id, other.id));
  }
  gt(other: TensorLike): Tensor {
    return new Tensor(typeof other === "number" ? native.gt_scalar(this.id, other) : native.gt(this.id, other.id));
  }
  ge(other: TensorLike): Tensor {
    return new Tensor(typeof other === "number" ? native.ge_scalar(this.id, other) : native.ge(this.id, other.id));
  }
  logicalAnd(other: Tensor): Tensor {
    return new Tensor(native.logical_and(this.id, other.id));
  }
  logicalOr(other: Tensor): Tensor {
    return new Tensor(native.logical_or(this.id, other.id));
  }
  logicalNot(): Tensor {
    return new Tensor(native.logical_not(this.id));
  }
  isnan(): Tensor {
    return new Tensor(native.isnan(this.id));
  }
  isinf(): Tensor {
    return new Tensor(native.isinf(this.id));
  }
  allclose(other: Tensor, rtol = 1e-5, atol = 1e-8): boolean {
    return native.allclose(this.id, other.id, rtol, atol);
  }
  equal(other: Tensor): boolean {
    return native.equal(this.id, other.id);
  }

  // --- reductions -------------------------------------------------------------------------

  sum(dim?: number | number[], keepdim = false): Tensor {
    if (dim === undefined) return new Tensor(native.sum_all(this.id));
    return new Tensor(native.sum(this.id, dims(dim), keepdim));
  }
  mean(dim?: number | number[], keepdim = false): Tensor {
    if (dim === undefined) return new Tensor(native.mean_all(this.id));
    return new Tensor(native.mean(this.id, dims(dim), keepdim));
  }
  /** Without `dim` the largest element; with `dim` the values along it (see `maxWithIndices`). */
  max(dim?: number, keepdim = false): Tensor {
    if (dim === undefined) return new Tensor(native.max_all(this.id));
    return new Tensor(native.amax(this.id, [dim], keepdim));
  }
  min(dim?: number, keepdim = false): Tensor {
    if (dim === undefined) return new Tensor(native.min_all(this.id));
    const [values, indices] = native.min_dim(this.id, dim, keepdim);
    native.dispose(indices);
    return new Tensor(values);
  }
  maxWithIndices(dim: number, keepdim = false): { values: Tensor; indices: Tensor } {
    const [values, indices] = native.max_dim(this.id, dim, keepdim);
    return { values: new Tensor(values), indices: new Tensor(indices) };
  }
  minWithIndices(dim: number, keepdim = false): { values: Tensor; indices: Tensor } {
    const [values, indices] = native.min_dim(this.id, dim, keepdim);
    return { values: new Tensor(values), indices: new Tensor(indices) };
  }
  amax(dim: number | number[], keepdim = false): Tensor {
    return new Tensor(native.amax(this.id, dims(dim), keepdim));
  }
  argmax(dim = -1, keepdim = false): Tensor {
    return new Tensor(native.argmax(this.id, dim, keepdim));
  }
  argmin(dim = -1, keepdim = false): Tensor {
    return new Tensor(native.argmin(this.id, dim, keepdim));
  }
  logsumexp(dim: number | number[], keepdim = false): Tensor {
    return new Tensor(native.logsumexp(this.id, dims(dim), keepdim));
  }
  norm(p = 2, dim?: number | number[], keepdim = false): Tensor {
    if (dim === undefined) return new Tensor(native.norm_all(this.id, p));
    return new Tensor(native.norm(this.id, p, dims(dim), keepdim));
  }
  var(dim: number | number[], options: { unbiased?: boolean; keepdim?: boolean } = {}): Tensor {
    return new Tensor(native.var(this.id, dims(dim), options.unbiased ?? true, options.keepdim ?? false));
  }
  cumsum(dim: number): Tensor {
    return new Tensor(native.cumsum(this.id, dim));
  }
  any(): Tensor {
    return new Tensor(native.any_all(this.id));
  }
  all(): Tensor {
    return new Tensor(native.all_all(this.id));
  }
  topk(k: number, dim = -1, largest = true, sorted = true): { values: Tensor; indices: Tensor } {
    const [values, indices] = native.topk(this.id, k, dim, largest, sorted);
    return { values: new Tensor(values), indices: new Tensor(indices) };
  }
  sort(dim = -1, descending = false): { values: Tensor; indices: Tensor } {
    const [values, indices] = native.sort(this.id, dim, descending);
    return { values: new Tensor(values), indices: new Tensor(indices) };
  }

  // --- linear algebra and nn --------------------------------------------------------------

  matmul(other: Tensor): Tensor {
    return new Tensor(native.matmul(this.id, other.id));
  }
  /** Matrix [n, m] times vector [m] -> [n]. */
  mv(vec: Tensor): Tensor {
    return new Tensor(native.mv(this.id, vec.id));
  }
  mm(other: Tensor): Tensor {
    return new Tensor(native.mm(this.id, other.id));
  }
  bmm(other: Tensor): Tensor {
    return new Tensor(native.bmm(this.id, other.id));
  }
  /** `beta * this + alpha * (batch1 @ batch2)` */
  baddbmm(batch1: Tensor, batch2: Tensor, beta = 1, alpha = 1): Tensor {
    return new Tensor(native.baddbmm(this.id, batch1.id, batch2.id, beta, alpha));
  }
  softmax(dim: number): Tensor {
    return new Tensor(native.softmax(this.id, dim));
  }
  logSoftmax(dim: number): Tensor {
    return new Tensor(native.log_softmax(this.id, dim));
  }
  multinomial(numSamples: number, replacement = false): Tensor {
    return new Tensor(native.multinomial(this.id, numSamples, replacement));
  }

  // --- in place (optimizers, initialisers): each returns `this` ------------------------------

  add_(other: TensorLike, alpha = 1): this {
    if (typeof other === "number") native.add_scalar_(this.id, other * alpha);
    else native.add_(this.id, other.id, alpha);
    return this;
  }
  sub_(other: Tensor, alpha = 1): this {
    native.sub_(this.id, other.id, alpha);
    return this;
  }
  mul_(other: TensorLike): this {
    if (typeof other === "number") native.mul_scalar_(this.id, other);
    else native.mul_(this.id, other.id);
    return this;
  }
  div_(other: TensorLike): this {
    if (typeof other === "number") native.div_scalar_(this.id, other);
    else native.div_(this.id, other.id);
    return this;
  }
  /** `this += value * tensor1 * tensor2` */
  addcmul_(tensor1: Tensor, tensor2: Tensor, value = 1): this {
    native.addcmul_(this.id, tensor1.id, tensor2.id, value);
    return this;
  }
  /** `this += value * tensor1 / tensor2` */
  addcdiv_(tensor1: Tensor, tensor2: Tensor, value = 1): this {
    native.addcdiv_(this.id, tensor1.id, tensor2.id, value);
    return this;
  }
  lerp_(end: Tensor, weight: number): this {
    native.lerp_(this.id, end.id, weight);
    return this;
  }
  copy_(src: Tensor): this {
    native.copy_(this.id, src.id);
    return this;
  }
  zero_(): this {
    native.zero_(this.id);
    return this;
  }
  fill_(value: number): this {
    native.fill_(this.id, value);
    return this;
  }
  clamp_(min: number | null, max: number | null = null): this {
    native.clamp_(this.id, min, max);
    return this;
  }
  sqrt_(): this {
    native.sqrt_(this.id);
    return this;
  }
  maskedFill_(mask: Tensor, value: number): this {
    native.masked_fill_(this.id, mask.id, value);
    return this;
  }
  normal_(mean = 0, std = 1): this {
    native.normal_(this.id, mean, std);
    return this;
  }
  uniform_(from = 0, to = 1): this {
    native.uniform_(this.id, from, to);
    return this;
  }
}

/**
 * The error for a disposed handle. The op is the method or function that read the id, taken from
 * the stack only on this path so the hot path pays nothing; the shape is there when it was read.
 */
function disposedError(shape: Shape | undefined, dtype: DType | undefined): Error {
  let op = "tensor op";
  for (const line of (new Error().stack ?? "").split("\n").slice(3)) {
    const frame = /^\s*at (?:([\w$]+)\.)?([A-Za-z_$][\w$]*) \(/.exec(line);
    if (frame && frame[1] !== "Array") {
      op = frame[2]!;
      break;
    }
  }
  const was = shape ? ` (it was [${shape.join(", ")}]${dtype ? ` ${dtype}` : ""})` : "";
  return new Error(`${op}: tensor used after dispose()${was}`);
}

function flatShape(args: Shape | [Shape]): Shape {
  return Array.isArray(args[0]) ? (args[0] as Shape) : (args as Shape);
}

function dims(dim: number | number[]): number[] {
  return typeof dim === "number" ? [dim] : dim;
}

function normDim(dim: number, ndim: number): number {
  return dim < 0 ? dim + ndim : dim;
}
