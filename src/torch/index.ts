// The tensor layer's public surface: import from here, not from the files behind it.
export * from "./dtype.ts";
export * from "./tensor.ts";
export * from "./autograd.ts";
export * from "./attention.ts";
export { engineInfo, engineReport } from "./env.ts";
