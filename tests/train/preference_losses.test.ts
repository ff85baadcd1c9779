// The preference losses on the same log-probs as an independent PyTorch computation
// (tests/reference/preference_reference.py, written from TRL and LLaMA-Factory), per loss type,
// and their gradients against finite differences in float64.
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { fileURLToPath } from "node:url";
import { describe, test } from "node:test";
import { type Tensor, manualSeed, randn, seededRandom, tensor, tidy } from "../../src/torch/index.ts";
import { sequenceLogProbs } from "../../src/train/stages/logprobs.ts";
import { RunningMean, bcoLoss, dpoLoss, ktoLoss, orpoLoss, simpoLoss } from "../../src/train/stages/preference_losses.ts";
import { gradcheck } from "../torch/op-helpers.ts";
import { assertClose, hasTorch } from "../torch/torch-reference.ts";

const SCRIPT = fileURLToPath(new URL("../reference/preference_reference.py", import.meta.url));
const reference = <T>(request: object): T => JSON.parse(execFileSync("/usr/bin/python3", [SCRIPT], { input: JSON.stringify(request), encoding: "utf8" })) as T;

const random = seededRandom(7);
/** Log-prob-like values: negative, a few nats apart. */
const logps = (n: number, scale = 3) => Array.from({ length: n }, () => -0.2 - scale * random());
const f64 = (values: number[]) => tensor(values, { dtype: "float64" });
const values = (t: Tensor) => t.toFlatArray();

const B = 5;
const [pc, pr, rc, rr] = [logps(B), logps(B), logps(B), logps(B)];
const beta = 0.3;

describe("preference losses against PyTorch", { skip: !hasTorch && "python3-torch is not installed" }, () => {
  test("sequence log-probs: shifted labels, masked sum of log-softmax, with and without ld_alpha", () => {
    const [N, T, V] = [4, 7, 11];
    const logits = Array.from({ length: N }, () => Array.from({ length: T }, () => Array.from({ length: V }, () => Math.fround(4 * random() - 2))));
    // A pairwise batch: rows 0-1 chosen, 2-3 rejected; shared prompts of 2 tokens, answers of different lengths, right padding.
    const labels = [
      [-100, -100, 3, 4, 5, 6, -100],
      [-100, -100, -100, 1, 2, -100, -100],
      [-100, -100, 7, 8, -100, -100, -100],
      [-100, -100, -100, 9, 10, 1, 2],
    ];
    for (const ldAlpha of [null, 0.4]) {
      const expected = reference<{ logps: number[]; valid_length: number[] }>({ op: "logps", logits, labels, ld_alpha: ldAlpha });
      tidy(() => {
        const got = sequenceLogProbs(tensor(logits, { dtype: "float32" }), labels, ldAlpha);
        assert.deepEqual(got.validLength, expected.valid_length);
        assertClose(values(got.logps), expected.logps, 1e-6, 1e-5, `logps (ld_alpha ${ldAlpha})`);
      });
    }
  });

  for (const lossType of ["sigmoid", "hinge", "ipo", "kto_pair"] as const) {
    test(`dpo ${lossType}: losses and rewards`, () => {
      const labelSmoothing = lossType === "sigmoid" ? 0.2 : 0;
      const expected = reference<{ losses: number[]; chosen_rewards: number[]; rejected_rewards: number[] }>({ op: "dpo", loss_type: lossType, beta, label_smoothing: labelSmoothing, pc, pr, rc, rr });
      tidy(() => {
        const got = dpoLoss(lossType, { chosen: f64(pc), rejected: f64(pr) }, { chosen: f64(rc), rejected: f64(rr) }, { beta, labelSmoothing });
        assertClose(values(got.losses), expected.losses, 1e-9, 1e-9, `${lossType} losses`);
        assertClose(values(got.chosenRewards), expected.chosen_rewards, 1e-9, 1e-9, "chosen rewards");
        assertClose(values(got.rejectedRewards), expected.rejected_rewards, 1e-9, 1e-9, "rejected rewards");
      });
    });
  }

  test("orpo and simpo on average log-probs; bco with a baseline", () => {
    // Average log-probs are near 0 for confident answers, where log1p(-e^x) is most delicate.
    const [c, r] = [logps(B, 0.5).map((x) => x / 10), logps(B, 0.5)];
    const orpo = reference<{ losses: number[] }>({ op: "orpo", beta, c, r });
    const simpo = reference<{ losses: number[] }>({ op: "simpo", beta: 2.5, gamma: 0.7, c, r });
    const bco = reference<{ losses: number[] }>({ op: "bco", beta, delta: 0.15, pc, pr, rc, rr });
    tidy(() => {
      assertClose(values(orpoLoss(f64(c), f64(r), beta).losses), orpo.losses, 1e-9, 1e-9, "orpo");
      assertClose(values(simpoLoss(f64(c), f64(r), 2.5, 0.7).losses), simpo.losses, 1e-9, 1e-9, "simpo");
      assertClose(values(bcoLoss({ chosen: f64(pc), rejected: f64(pr) }, { chosen: f64(rc), rejected: f64(rr) }, beta, 0.15)), bco.losses, 1e-9, 1e-9, "bco");
      // In float32, as the stage computes them, still within 1e-6 of the float64 reference.
      const f32 = (v: number[]) => tensor(v, { dtype: "float32" });
      assertClose(values(orpoLoss(f32(c), f32(r), beta).losses), orpo.losses, 1e-6, 1e-6, "orpo float32");
    });
  });

  test("kto: KL from the mismatched rows, weights, empty sides", () => {
    const [pkl, rkl] = [logps(B), logps(B)];
    const options = { beta, desirableWeight: 1.5, undesirableWeight: 0.7 };
    const request = { op: "kto", beta, desirable_weight: 1.5, undesirable_weight: 0.7, pkl, rkl };
    for (const [chosen, rejected] of [[2, 3], [0, 5], [5, 0]] as const) {
      const sides = { pc: pc.slice(0, chosen), pr: pr.slice(0, rejected), rc: rc.slice(0, chosen), rr: rr.slice(0, rejected) };
      const expected = reference<{ losses: number[]; kl: number }>({ ...request, ...sides });
      tidy(() => {
        const got = ktoLoss({ chosen: f64(sides.pc), rejected: f64(sides.pr), kl: f64(pkl) }, { chosen: f64(sides.rc), rejected: f64(sides.rr), kl: f64(rkl) }, options);
        assertClose(values(got.losses), expected.losses, 1e-9, 1e-9, `kto ${chosen}/${rejected}`);
        assertClose([got.kl.item()], [expected.kl], 1e-9, 1e-9, "kl");
      });
    }
  });
});

describe("preference losses: closed forms and gradients", () => {
  test("policy = reference: sigmoid ln 2, hinge 1, ipo (1/(2β))², rewards 0", () => {
    tidy(() => {
      const same = { chosen: f64(pc), rejected: f64(pr) };
      assertClose(values(dpoLoss("sigmoid", same, same, { beta, labelSmoothing: 0 }).losses), new Array(B).fill(Math.log(2)), 1e-12, 1e-12);
      assertClose(values(dpoLoss("hinge", same, same, { beta, labelSmoothing: 0 }).losses), new Array(B).fill(1), 1e-12, 1e-12);
      const ipo = dpoLoss("ipo", same, same, { beta, labelSmoothing: 0 });
      assertClose(values(ipo.losses), new Array(B).fill((1 / (2 * beta)) ** 2), 1e-12, 1e-12);
      assert.deepEqual(values(ipo.chosenRewards), new Array(B).fill(0));
    });
  });

  test("TRL's running mean (BCO's baseline) is the mean of the values so far", () => {
    const running = new RunningMean();
    const seen = [0.3, -0.1, 0.7, 0.2];
    seen.forEach((value, i) => assertClose([running.update(value)], [seen.slice(0, i + 1).reduce((a, b) => a + b, 0) / (i + 1)], 1e-12, 1e-12));
  });

  // Finite differences in float64 on the policy log-probs (the reference is a constant).
  manualSeed(3);
  const ref = { chosen: randn([4], { dtype: "float64" }).sub(2), rejected: randn([4], { dtype: "float64" }).sub(2) };
  for (const lossType of ["sigmoid", "hinge", "ipo", "kto_pair"] as const) {
    test(`dpo ${lossType} gradient`, () => {
      gradcheck(lossType, (c, r) => dpoLoss(lossType, { chosen: c!.sub(2), rejected: r!.sub(2) }, ref, { beta: 0.7, labelSmoothing: lossType === "sigmoid" ? 0.1 : 0 }).losses, [[4], [4]]);
    });
  }
  test("orpo and simpo gradients", () => {
    // c = -(x² + 0.05) keeps the average log-probs negative, where the odds are defined.
    const negative = (x: Tensor) => x.square().add(0.05).neg();
    gradcheck("orpo", (c, r) => orpoLoss(negative(c!), negative(r!), 0.5).losses, [[4], [4]]);
    gradcheck("simpo", (c, r) => simpoLoss(c!, r!, 2, 0.5).losses, [[4], [4]]);
  });
  test("kto gradient (the KL estimate is detached)", () => {
    const kl = { policy: randn([3], { dtype: "float64" }).add(1), reference: randn([3], { dtype: "float64" }) };
    gradcheck("kto", (c, r, refC, refR) => ktoLoss({ chosen: c!, rejected: r!, kl: kl.policy }, { chosen: refC!, rejected: refR!, kl: kl.reference }, { beta: 0.5, desirableWeight: 1.3, undesirableWeight: 0.8 }).losses, [[2], [3], [2], [3]]);
  });
});
