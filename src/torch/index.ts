// The tensor layer's public surface: import from here, not from the files behind it.
export * from "./dtype.ts";
export * from "./scope.ts";
export * from "./tensor.ts";
export * from "./creation.ts";
export * from "./functional.ts";
export * from "./autograd.ts";
export * from "./attention.ts";
export * from "./linalg.ts";
export { engineInfo, engineReport } from "./env.ts";
export * from "./io/index.ts";
export * from "./nn/module.ts";
export * from "./nn/layers.ts";
export * from "./nn/clip.ts";
export * from "./optim/optimizer.ts";
export * from "./optim/adamw.ts";
export * from "./optim/sgd.ts";
export * from "./optim/schedulers.ts";
export { seededRandom, shuffled } from "./seeded.ts";
