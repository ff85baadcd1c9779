// PPO's arithmetic (src/train/stages/ppo_math.ts) against an independent PyTorch computation on the
// same tensors (tests/reference/ppo_reference.py, written from TRL 0.9.6): per-token rewards, GAE
// with and without whitened rewards, masked whitening, the clipped losses with their statistics and
// gradients (clipping active, and the ratio guard), the adaptive KL controller, the running score norm.
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { fileURLToPath } from "node:url";
import { describe, test } from "node:test";
import { seededRandom, tensor, tidy } from "../../src/torch/index.ts";
import { AdaptiveKLController, RunningMoments, computeAdvantages, computeRewards, maskedMean, maskedVar, maskedWhiten, normalizeScores, ppoLoss } from "../../src/train/stages/ppo_math.ts";
import { assertClose, hasTorch } from "../torch/torch-reference.ts";

const SCRIPT = fileURLToPath(new URL("../reference/ppo_reference.py", import.meta.url));
const reference = <T>(request: object): T => JSON.parse(execFileSync("/usr/bin/python3", [SCRIPT], { input: JSON.stringify(request), encoding: "utf8" })) as T;

const random = seededRandom(11);
const [B, T, V] = [3, 7, 5];
const grid = (scale = 1, shift = 0) => Array.from({ length: B }, () => Array.from({ length: T }, () => shift + scale * (2 * random() - 1)));
// Responses at different offsets and lengths (the query's last token predicts the first response token).
const mask = [
  [0, 0, 1, 1, 1, 1, 0],
  [0, 1, 1, 1, 1, 1, 1],
  [0, 0, 0, 1, 1, 0, 0],
];
const f64 = (values: number[] | number[][] | number[][][]) => tensor(values, { dtype: "float64" });
const flat = (rows: number[][]) => rows.flat();

describe("PPO arithmetic against PyTorch (TRL 0.9.6)", { skip: !hasTorch && "python3-torch is not installed" }, () => {
  test("per-token rewards: −kl_coef · (logp − ref_logp), the score at the last response token", () => {
    const scores = [0.7, -1.3, 2.1];
    const [logprobs, refLogprobs] = [grid(1, -2), grid(1, -2)];
    const expected = reference<{ rewards: number[][]; non_score_rewards: number[][]; kls: number[][] }>({ op: "rewards", scores, logprobs, ref_logprobs: refLogprobs, mask, kl_coef: 0.2 });
    tidy(() => {
      const got = computeRewards(f64(scores), f64(logprobs), f64(refLogprobs), mask, 0.2);
      assertClose(got.rewards.toFlatArray(), flat(expected.rewards), 1e-9, 1e-9, "rewards");
      assertClose(got.nonScoreRewards.toFlatArray(), flat(expected.non_score_rewards), 1e-9, 1e-9, "non-score rewards");
      assertClose(got.kls.toFlatArray(), flat(expected.kls), 1e-9, 1e-9, "kls");
    });
  });

  test("masked mean, unbiased variance and whitening (mean shifted or kept)", () => {
    const values = grid(3, 1);
    for (const shiftMean of [true, false]) {
      const expected = reference<{ whitened: number[][]; mean: number; var: number }>({ op: "whiten", values, mask, shift_mean: shiftMean });
      tidy(() => {
        assertClose([maskedMean(f64(values), f64(mask)).item()], [expected.mean], 1e-9, 1e-9, "mean");
        assertClose([maskedVar(f64(values), f64(mask)).item()], [expected.var], 1e-9, 1e-9, "var");
        assertClose(maskedWhiten(f64(values), f64(mask), shiftMean).toFlatArray(), flat(expected.whitened), 1e-9, 1e-9, `whitened (shift_mean ${shiftMean})`);
      });
    }
  });

  test("GAE advantages and returns (γ, λ), with and without whitened rewards, in float64 and float32", () => {
    const [values, rewards] = [grid(1), grid(0.5)];
    for (const [gamma, lam, whitenRewards] of [[1, 0.95, false], [0.9, 0.8, true]] as const) {
      const expected = reference<{ values: number[][]; advantages: number[][]; returns: number[][] }>({ op: "advantages", values, rewards, mask, gamma, lam, whiten_rewards: whitenRewards });
      for (const dtype of ["float64", "float32"] as const) {
        const tol = dtype === "float64" ? 1e-9 : 1e-6;
        tidy(() => {
          const as = (v: number[][]) => tensor(v, { dtype });
          const got = computeAdvantages(as(values), as(rewards), as(mask), { gamma, lam, whitenRewards });
          assertClose(got.values.toFlatArray(), flat(expected.values), tol, tol, "values");
          assertClose(got.advantages.toFlatArray(), flat(expected.advantages), tol, tol, `advantages (${dtype}, whiten_rewards ${whitenRewards})`);
          assertClose(got.returns.toFlatArray(), flat(expected.returns), tol, tol, "returns");
        });
      }
    }
  });

  test("clipped policy and value losses: total, statistics and gradients; the ratio guard zeroes the loss", () => {
    const oldLogprobs = grid(1, -2);
    const values = grid(1);
    const advantages = grid(1.5);
    const returns = grid(1.2);
    const logits = Array.from({ length: B }, () => Array.from({ length: T }, () => Array.from({ length: V }, () => 3 * random())));
    // Ratios of up to e^0.6 and value moves of up to 0.6: both clips bind somewhere.
    const logprobs = oldLogprobs.map((row) => row.map((x) => x + 0.6 * (2 * random() - 1)));
    const vpreds = values.map((row) => row.map((x) => x + 0.6 * (2 * random() - 1)));
    const options = { cliprange: 0.2, cliprangeValue: 0.2, vfCoef: 0.1, ratioThreshold: 10 };
    for (const [shift, ratioThreshold] of [[0, 10], [3, 10]] as const) {
      const shifted = logprobs.map((row) => row.map((x) => x + shift)); // mean ratio ~e^3 > 10: skipped
      const request = { op: "loss", old_logprobs: oldLogprobs, values, logits, vpreds, logprobs: shifted, mask, advantages, returns, cliprange: 0.2, cliprange_value: 0.2, vf_coef: 0.1, ratio_threshold: ratioThreshold };
      const expected = reference<{ loss: number; stats: Record<string, number>; grad_logprobs: number[][]; grad_vpreds: number[][] }>(request);
      tidy(() => {
        const lp = f64(shifted).requiresGrad_(true);
        const vp = f64(vpreds).requiresGrad_(true);
        const got = ppoLoss({ oldLogprobs: f64(oldLogprobs), values: f64(values), logits: f64(logits), vpreds: vp, logprobs: lp, mask: f64(mask), advantages: f64(advantages), returns: f64(returns) }, { ...options, ratioThreshold });
        assert.equal(got.skipped, shift > 0);
        assertClose([got.loss.item()], [expected.loss], 1e-9, 1e-9, "loss");
        for (const [name, value] of Object.entries(expected.stats)) assertClose([got.stats[name]!], [value], 1e-9, 1e-9, name);
        assert.deepEqual(Object.keys(got.stats).sort(), Object.keys(expected.stats).sort());
        got.loss.backward();
        assertClose(lp.grad!.toFlatArray(), flat(expected.grad_logprobs), 1e-9, 1e-12, "d loss / d logprobs");
        assertClose(vp.grad!.toFlatArray(), flat(expected.grad_vpreds), 1e-9, 1e-12, "d loss / d vpreds");
        if (shift === 0) assert.ok(expected.stats["policy/clipfrac"]! > 0 && expected.stats["val/clipfrac"]! > 0, "both clips bind");
      });
    }
  });

  test("adaptive KL controller: clipped proportional error, n_steps / horizon", () => {
    const updates = [[12, 8], [6.5, 8], [0.3, 8], [-2, 64], [6, 8]];
    const expected = reference<{ values: number[] }>({ op: "kl", init: 0.2, target: 6, horizon: 10000, updates });
    const controller = new AdaptiveKLController(0.2, 6, 10000);
    const got = updates.map(([current, n]) => (controller.update(current!, n!), controller.value));
    assertClose(got, expected.values, 1e-12, 1e-15, "kl coef");
  });

  test("ppo_score_norm: running mean and std over batches, scores normalised as TRL (float32)", () => {
    const batches = [[0.5, 1.5, -0.2, 2.0], [3.0, 2.5, 2.7, 1.0], [-1, 0, 1, 2]];
    const expected = reference<{ normalized: number[][]; mean: number; std: number }>({ op: "moments", batches });
    const moments = new RunningMoments();
    const got = batches.map((batch) => normalizeScores(batch, moments));
    assertClose(got.flat(), expected.normalized.flat(), 1e-6, 1e-6, "normalised scores");
    assertClose([moments.mean, moments.std], [expected.mean, expected.std], 1e-6, 1e-6, "running mean, std");
  });
});
