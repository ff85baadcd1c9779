// Data types and devices as the tensor layer names them, with libtorch's ScalarType codes
// (c10/core/ScalarType.h) and the typed arrays that hold each type in JavaScript.
export type DType = "float32" | "float16" | "bfloat16" | "float64" | "int64" | "int32" | "int16" | "int8" | "uint8" | "bool";
export type Device = "cpu" | "cuda" | `cuda:${number}`;

export const SCALAR_TYPE: Record<DType, number> = {
  uint8: 0,
  int8: 1,
  int16: 2,
  int32: 3,
  int64: 4,
  float16: 5,
  float32: 6,
  float64: 7,
  bool: 11,
  bfloat16: 15,
};

const BY_CODE = new Map<number, DType>(Object.entries(SCALAR_TYPE).map(([name, code]) => [code, name as DType]));

export function dtypeFromCode(code: number): DType {
  const dtype = BY_CODE.get(code);
  if (!dtype) throw new Error(`unsupported libtorch scalar type ${code}`);
  return dtype;
}

export const ITEM_SIZE: Record<DType, number> = {
  uint8: 1,
  int8: 1,
  int16: 2,
  int32: 4,
  int64: 8,
  float16: 2,
  float32: 4,
  float64: 8,
  bool: 1,
  bfloat16: 2,
};

export function isFloating(dtype: DType): boolean {
  return dtype === "float32" || dtype === "float16" || dtype === "bfloat16" || dtype === "float64";
}

/** The dtype a typed array's elements have. */
export function dtypeOfTypedArray(array: ArrayBufferView): DType {
  if (array instanceof Float32Array) return "float32";
  if (array instanceof Float64Array) return "float64";
  if (array instanceof BigInt64Array) return "int64";
  if (array instanceof Int32Array) return "int32";
  if (array instanceof Int16Array) return "int16";
  if (array instanceof Int8Array) return "int8";
  if (array instanceof Uint8Array || array instanceof Uint8ClampedArray) return "uint8";
  throw new Error(`typed array ${array.constructor.name} has no tensor dtype`);
}

export type TypedArrayOf<D extends DType> = D extends "float64"
  ? Float64Array
  : D extends "int64"
    ? BigInt64Array
    : D extends "int32"
      ? Int32Array
      : D extends "int16"
        ? Int16Array
        : D extends "int8"
          ? Int8Array
          : D extends "uint8" | "bool"
            ? Uint8Array
            : Float32Array;
