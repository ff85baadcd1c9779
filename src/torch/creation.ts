// Making tensors: from data (`tensor`, `fromBytes`), filled (`zeros`, `full`, `arange`, ...), and
// random from the seeded generator (`manualSeed`, `randn`, RNG state), with torch's dtype rules.
import { type DType, type Device, SCALAR_TYPE, dtypeOfTypedArray, isFloating } from "./dtype.ts";
import { native } from "./native.ts";
import { type NestedArray, type Shape, Tensor } from "./tensor.ts";


export interface TensorOptions {
  dtype?: DType;
  device?: Device | string;
  requiresGrad?: boolean;
}

function finish(tensor: Tensor, options: TensorOptions): Tensor {
  let out = tensor;
  if (options.device && options.device !== "cpu") {
    out = tensor.to(options.device);
    tensor.dispose();
  }
  if (options.requiresGrad) out.requiresGrad_(true);
  return out;
}

function inferShape(data: NestedArray): Shape {
  const shape: Shape = [];
  let level: NestedArray = data;
  while (Array.isArray(level)) {
    shape.push(level.length);
    level = level[0] as NestedArray;
  }
  return shape;
}

/**
 * A tensor from a number, nested arrays, or a typed array (with `shape`). Like `torch.tensor`,
 * whole numbers give int64, any fraction float32, booleans bool, unless `dtype` says otherwise.
 */
export function tensor(data: NestedArray | ArrayBufferView, options: TensorOptions & { shape?: Shape } = {}): Tensor {
  if (ArrayBuffer.isView(data)) {
    const source = dtypeOfTypedArray(data);
    const shape = options.shape ?? [data.byteLength / (data as unknown as { BYTES_PER_ELEMENT: number }).BYTES_PER_ELEMENT];
    let out = new Tensor(native.from_buffer(data, shape, SCALAR_TYPE[source]));
    if (options.dtype && options.dtype !== source) {
      const cast = out.to(options.dtype);
      out.dispose();
      out = cast;
    }
    return finish(out, options);
  }
  const shape = options.shape ?? inferShape(data);
  const flat = (Array.isArray(data) ? (data as unknown[]).flat(Infinity) : [data]) as (number | boolean)[];
  const expected = shape.reduce((a, b) => a * b, 1);
  if (flat.length !== expected) {
    throw new Error(`tensor(): ragged nested array: ${flat.length} values for shape [${shape.join(", ")}]`);
  }
  const inferred: DType =
    typeof flat[0] === "boolean" ? "bool" : flat.length > 0 && flat.every((v) => Number.isInteger(v)) ? "int64" : "float32";
  const dtype = options.dtype ?? inferred;
  let out: Tensor;
  if (dtype === "bool" || dtype === "uint8") {
    out = new Tensor(native.from_buffer(Uint8Array.from(flat, Number), shape, SCALAR_TYPE.uint8));
  } else if (dtype === "int32") {
    out = new Tensor(native.from_buffer(Int32Array.from(flat, Number), shape, SCALAR_TYPE.int32));
  } else if (isFloating(dtype) && dtype !== "float64") {
    out = new Tensor(native.from_buffer(Float32Array.from(flat, Number), shape, SCALAR_TYPE.float32));
  } else {
    // float64 and the integer types go through float64, exact for integers up to 2^53.
    out = new Tensor(native.from_buffer(Float64Array.from(flat, Number), shape, SCALAR_TYPE.float64));
  }
  if (out.dtype !== dtype) {
    const cast = out.to(dtype);
    out.dispose();
    out = cast;
  }
  return finish(out, options);
}

/** A tensor holding a copy of raw little-endian bytes in `dtype` (file formats, bf16 included). */
export function fromBytes(bytes: ArrayBufferView | ArrayBuffer, shape: Shape, dtype: DType): Tensor {
  return new Tensor(native.from_buffer(bytes, shape, SCALAR_TYPE[dtype]));
}

function creationArgs(options: TensorOptions): [number, string] {
  return [SCALAR_TYPE[options.dtype ?? "float32"], options.device ?? "cpu"];
}

function created(id: number, options: TensorOptions): Tensor {
  const out = new Tensor(id);
  if (options.requiresGrad) out.requiresGrad_(true);
  return out;
}

export function zeros(shape: Shape, options: TensorOptions = {}): Tensor {
  return created(native.zeros(shape, ...creationArgs(options)), options);
}
export function ones(shape: Shape, options: TensorOptions = {}): Tensor {
  return created(native.ones(shape, ...creationArgs(options)), options);
}
export function empty(shape: Shape, options: TensorOptions = {}): Tensor {
  return created(native.empty(shape, ...creationArgs(options)), options);
}
export function full(shape: Shape, value: number, options: TensorOptions = {}): Tensor {
  return created(native.full(shape, value, ...creationArgs(options)), options);
}
/** `[start, end)` by `step`; int64 unless a fraction appears or `dtype` says otherwise. */
export function arange(start: number, end?: number, step = 1, options: TensorOptions = {}): Tensor {
  if (end === undefined) [start, end] = [0, start];
  const integral = [start, end, step].every(Number.isInteger);
  const dtype = options.dtype ?? (integral ? "int64" : "float32");
  return created(native.arange(start, end, step, SCALAR_TYPE[dtype], options.device ?? "cpu"), options);
}
export function linspace(start: number, end: number, steps: number, options: TensorOptions = {}): Tensor {
  return created(native.linspace(start, end, steps, ...creationArgs(options)), options);
}
export function eye(n: number, m = n, options: TensorOptions = {}): Tensor {
  return created(native.eye(n, m, ...creationArgs(options)), options);
}
export function zerosLike(t: Tensor): Tensor {
  return new Tensor(native.zeros_like(t.id));
}
export function onesLike(t: Tensor): Tensor {
  return new Tensor(native.ones_like(t.id));
}
export function fullLike(t: Tensor, value: number): Tensor {
  return new Tensor(native.full_like(t.id, value));
}
export function emptyLike(t: Tensor): Tensor {
  return new Tensor(native.empty_like(t.id));
}

// --- random (seeded by manualSeed) ------------------------------------------------------------

export function manualSeed(seed: number): void {
  native.manual_seed(seed);
}
export function randn(shape: Shape, options: TensorOptions = {}): Tensor {
  return created(native.randn(shape, ...creationArgs(options)), options);
}
export function rand(shape: Shape, options: TensorOptions = {}): Tensor {
  return created(native.rand(shape, ...creationArgs(options)), options);
}
export function randint(low: number, high: number, shape: Shape, options: TensorOptions = {}): Tensor {
  return created(native.randint(low, high, shape, SCALAR_TYPE[options.dtype ?? "int64"], options.device ?? "cpu"), options);
}
export function randLike(t: Tensor): Tensor {
  return new Tensor(native.rand_like(t.id));
}
export function randnLike(t: Tensor): Tensor {
  return new Tensor(native.randn_like(t.id));
}
/** The CPU generator's state (a uint8 tensor), for exact resume. */
export function getRngState(): Tensor {
  return new Tensor(native.rng_state());
}
export function setRngState(state: Tensor): void {
  native.set_rng_state(state.id);
}
