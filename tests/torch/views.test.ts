// Views and layout, indexing (indexSelect, gather, scatter, maskedFill, where, embedding) and
// joining/splitting (cat, stack, split, chunk), each against values written out by hand.
import { test } from "node:test";
import assert from "node:assert/strict";
import { arange, cat, embedding, stack, tensor, tidy, where, zeros } from "../../src/torch/index.ts";

test("views: view, reshape, permute, transpose, expand, unsqueeze, squeeze, flatten, contiguous", () => {
  tidy(() => {
    const x = arange(6); // [0..5]
    assert.deepEqual(x.view(2, 3).toArray(), [[0, 1, 2], [3, 4, 5]]);
    assert.deepEqual(x.view([3, -1]).toArray(), [[0, 1], [2, 3], [4, 5]]);
    const m = x.reshape(2, 3);
    assert.deepEqual(m.t().toArray(), [[0, 3], [1, 4], [2, 5]]);
    assert.equal(m.t().isContiguous(), false);
    assert.equal(m.t().contiguous().isContiguous(), true);
    // reshape copies where view cannot.
    assert.deepEqual(m.t().reshape(6).toArray(), [0, 3, 1, 4, 2, 5]);
    const cube = arange(24).view(2, 3, 4);
    const p = cube.permute(2, 0, 1);
    assert.deepEqual(p.shape, [4, 2, 3]);
    assert.equal(p.select(0, 3).select(0, 1).select(0, 2).item(), 1 * 12 + 2 * 4 + 3);
    assert.deepEqual(cube.transpose(0, 2).shape, [4, 3, 2]);
    assert.deepEqual(tensor([[1], [2]]).expand(2, 3).toArray(), [[1, 1, 1], [2, 2, 2]]);
    assert.deepEqual(tensor([1, 2]).expand([2, -1]).toArray(), [[1, 2], [1, 2]]);
    assert.deepEqual(tensor([1, 2]).unsqueeze(0).shape, [1, 2]);
    assert.deepEqual(tensor([1, 2]).unsqueeze(-1).toArray(), [[1], [2]]);
    assert.deepEqual(zeros([1, 2, 1]).squeeze().shape, [2]);
    assert.deepEqual(zeros([1, 2, 1]).squeeze(0).shape, [2, 1]);
    assert.deepEqual(zeros([1, 2, 1]).squeeze(1).shape, [1, 2, 1]);
    assert.deepEqual(cube.flatten().shape, [24]);
    assert.deepEqual(cube.flatten(1).shape, [2, 12]);
    assert.deepEqual(cube.flatten(0, 1).shape, [6, 4]);
    assert.equal(cube.size(-1), 4);
    assert.equal(cube.numel, 24);
    assert.equal(cube.ndim, 3);
  });
});

test("views share storage with their base", () => {
  tidy(() => {
    const base = zeros([2, 3]);
    base.view(6).narrow(0, 4, 2).fill_(7);
    base.t().select(0, 0).fill_(1);
    assert.deepEqual(base.toArray(), [[1, 0, 0], [1, 7, 7]]);
  });
});

test("narrow, slice (negative ends and steps), select, flip, roll, repeat, repeatInterleave", () => {
  tidy(() => {
    const x = arange(6);
    assert.deepEqual(x.narrow(0, 2, 3).toArray(), [2, 3, 4]);
    assert.deepEqual(x.slice(0, -3).toArray(), [3, 4, 5]);
    assert.deepEqual(x.slice(0, 1, -1).toArray(), [1, 2, 3, 4]);
    assert.deepEqual(x.slice(0, 1, undefined, 2).toArray(), [1, 3, 5]);
    const m = x.view(2, 3);
    assert.deepEqual(m.slice(1, 1).toArray(), [[1, 2], [4, 5]]);
    assert.deepEqual(m.select(1, -1).toArray(), [2, 5]);
    assert.deepEqual(m.flip(1).toArray(), [[2, 1, 0], [5, 4, 3]]);
    assert.deepEqual(x.roll(2, 0).toArray(), [4, 5, 0, 1, 2, 3]);
    assert.deepEqual(tensor([1, 2]).repeat(2, 2).toArray(), [[1, 2, 1, 2], [1, 2, 1, 2]]);
    assert.deepEqual(tensor([[1, 2]]).repeatInterleave(2, 1).toArray(), [[1, 1, 2, 2]]);
  });
});

test("tril and triu with diagonals", () => {
  tidy(() => {
    const m = arange(1, 10).view(3, 3);
    assert.deepEqual(m.tril().toArray(), [[1, 0, 0], [4, 5, 0], [7, 8, 9]]);
    assert.deepEqual(m.tril(-1).toArray(), [[0, 0, 0], [4, 0, 0], [7, 8, 0]]);
    assert.deepEqual(m.triu().toArray(), [[1, 2, 3], [0, 5, 6], [0, 0, 9]]);
    assert.deepEqual(m.triu(1).toArray(), [[0, 2, 3], [0, 0, 6], [0, 0, 0]]);
  });
});

test("indexSelect, gather, scatter, scatterAdd, indexCopy", () => {
  tidy(() => {
    const m = tensor([[1, 2, 3], [4, 5, 6]]);
    assert.deepEqual(m.indexSelect(1, tensor([2, 0])).toArray(), [[3, 1], [6, 4]]);
    assert.deepEqual(m.indexSelect(0, tensor([1, 1], { dtype: "int32" })).toArray(), [[4, 5, 6], [4, 5, 6]]);
    // out[i][j] = m[i][index[i][j]]
    assert.deepEqual(m.gather(1, tensor([[2, 2], [0, 1]])).toArray(), [[3, 3], [4, 5]]);
    // out[index[i][j]][j] = m[i][j] along dim 0
    assert.deepEqual(m.gather(0, tensor([[1, 0, 1]])).toArray(), [[4, 2, 6]]);
    const z = zeros([2, 4]);
    assert.deepEqual(z.scatter(1, tensor([[3], [0]]), tensor([[7], [8]], { dtype: "float32" })).toArray(), [[0, 0, 0, 7], [8, 0, 0, 0]]);
    assert.deepEqual(z.scatter(1, tensor([[1, 2]]), -1).toArray(), [[0, -1, -1, 0], [0, 0, 0, 0]]);
    assert.deepEqual(z.toArray(), [[0, 0, 0, 0], [0, 0, 0, 0]], "scatter is out of place");
    assert.deepEqual(
      zeros([3]).scatterAdd(0, tensor([0, 2, 0, 0]), tensor([1, 2, 3, 4], { dtype: "float32" })).toArray(),
      [8, 0, 2],
    );
    assert.deepEqual(zeros([3, 2]).indexCopy(0, tensor([2, 0]), tensor([[1, 2], [3, 4]], { dtype: "float32" })).toArray(), [[3, 4], [0, 0], [1, 2]]);
  });
});

test("maskedFill, maskedSelect, nonzero, where", () => {
  tidy(() => {
    const x = tensor([[1, 2], [3, 4]], { dtype: "float32" });
    const mask = tensor([[true, false], [false, true]]);
    assert.deepEqual(x.maskedFill(mask, -Infinity).toArray(), [[-Infinity, 2], [3, -Infinity]]);
    // A row mask broadcasts over rows.
    assert.deepEqual(x.maskedFill(tensor([false, true]), 0).toArray(), [[1, 0], [3, 0]]);
    assert.deepEqual(x.maskedSelect(mask).toArray(), [1, 4]);
    assert.deepEqual(mask.nonzero().toArray(), [[0, 0], [1, 1]]);
    assert.deepEqual(where(x.gt(2), x, x.neg()).toArray(), [[-1, -2], [3, 4]]);
    assert.deepEqual(where(tensor([true, false]), tensor([1, 2]), tensor([[5, 6], [7, 8]])).toArray(), [[1, 6], [1, 8]]);
  });
});

test("embedding picks rows, any index shape, padding row", () => {
  tidy(() => {
    const w = tensor([[0, 0], [1, 10], [2, 20], [3, 30]], { dtype: "float32" });
    assert.deepEqual(embedding(w, tensor([[3, 1], [0, 3]])).toArray(), [[[3, 30], [1, 10]], [[0, 0], [3, 30]]]);
    assert.deepEqual(embedding(w, tensor(2)).toArray(), [2, 20]);
    // padding_idx only stops that row's gradient; its value is still read.
    const wg = w.clone().requiresGrad_(true);
    embedding(wg, tensor([0, 1, 1]), 0).sum().backward();
    assert.deepEqual(wg.grad!.toArray(), [[0, 0], [2, 2], [0, 0], [0, 0]]);
  });
});

test("cat, stack, split (sizes and list), chunk", () => {
  tidy(() => {
    const a = tensor([[1, 2]]);
    const b = tensor([[3, 4], [5, 6]]);
    assert.deepEqual(cat([a, b]).toArray(), [[1, 2], [3, 4], [5, 6]]);
    assert.deepEqual(cat([b, b], 1).toArray(), [[3, 4, 3, 4], [5, 6, 5, 6]]);
    assert.deepEqual(cat([b, b], -1).shape, [2, 4]);
    assert.deepEqual(stack([a, a]).shape, [2, 1, 2]);
    assert.deepEqual(stack([tensor([1, 2]), tensor([3, 4])], 1).toArray(), [[1, 3], [2, 4]]);
    const x = arange(7);
    assert.deepEqual(x.split(3).map((t) => t.toArray()), [[0, 1, 2], [3, 4, 5], [6]]);
    assert.deepEqual(x.split([2, 5]).map((t) => t.toArray()), [[0, 1], [2, 3, 4, 5, 6]]);
    assert.deepEqual(x.chunk(3).map((t) => t.toArray()), [[0, 1, 2], [3, 4, 5], [6]]);
    assert.deepEqual(arange(6).view(2, 3).chunk(3, 1).map((t) => t.toArray()), [[[0], [3]], [[1], [4]], [[2], [5]]]);
  });
});
